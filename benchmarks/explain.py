"""``recops bench explain``: are deletion explanations faithful, and what do they cost?

**Faithfulness** (per dataset and model; each model trained with its
``configs/models/<name>.yaml``, epochs capped by ``--max-epochs``): for a seeded sample of
test users with at least ``min_history`` events, the target is the model's top-1
recommendation (history items excluded). The three events with the largest single-event
deletion influence on it are deleted *together*, and so are 3 random events and the 3
most recent events; each variant is re-scored. Deleting 3 events at once is not the sum
of 3 single deletions, so this tests whether single-event influence ranks events well.
Reported per strategy: mean score drop and mean rank drop of the target, and the share
of users whose top-3 deletion drops the score strictly more than random / recent.

**Latency**: each trained model of the first dataset named by ``latency_models``
(default: its SASRec, else its first model) is registered in a temporary workspace and
deployed as a real bento (no feature store); ``POST /recommend`` with a real 50-event
history and k=10, with and without ``"explain": true``, at concurrency 1 and 8 (closed
loop, ``benchmarks.loadgen`` in its own process), plus the same calls in-process through
:class:`services.engine.Engine` (no HTTP). The measurement lock is held per model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.accuracy import _model_config
from benchmarks.common import measurement_lock
from components.errors import ConfigError
from components.explain.gradients import integrated_gradients
from components.explain.group import greedy_group_deletion
from components.explain.influence import Question, deletion_influence
from components.explain.search import POOL, best_deletion_sets
from components.explain.shapley import shapley_values
from components.models.bundle import ModelBundle

CURVE = 5  # the deletion curve: each method's top 1..CURVE events deleted together
N_DELETE = 3  # the headline point of the curve
IG_STEPS = 16
BEAM = 4  # the beam method's width (components.explain.group, beam search over joint deletions)
SHAPLEY_PERMUTATIONS = 8
BASELINES = ("recent", "random")
LATENCY_HISTORY = 50
LATENCY_K = 10


# --- faithfulness -------------------------------------------------------------------------
def without_events(history: torch.Tensor, positions: list[int], width: int) -> torch.Tensor:
    """``[width]`` left-padded ``history`` with the events at ``positions`` removed."""
    keep = torch.ones(len(history), dtype=torch.bool)
    keep[positions] = False
    kept = history[keep][-width:]
    row = torch.zeros(width, dtype=torch.long)
    row[width - len(kept) :] = kept
    return row


def ranked_positions(values: np.ndarray) -> list[int]:
    """Positions by decreasing value; ties list the most recent (largest) position first,
    as :meth:`~components.explain.influence.Influence.top_events` does."""
    reversed_order = np.argsort(-values[::-1], kind="stable")
    return (len(values) - 1 - reversed_order).tolist()


def baseline_orders(length: int, rng: np.random.Generator) -> dict[str, list[int]]:
    """The most recent events first, and a random order."""
    return {
        "recent": list(range(length - 1, -1, -1)),
        "random": rng.permutation(length).tolist(),
    }


def capped_order(order: list[int], length: int, cap: int) -> list[int]:
    """``order`` (history positions, most influential first) restricted to the ``cap`` most
    recent events: what deletion explains with ``serve.explain_max_history = cap`` (a
    single deletion's drop does not depend on which other events are candidates)."""
    return [position for position in order if position >= length - cap]


def searched_order(best: list[int], by_single: list[int]) -> list[int]:
    """The searched set first, then the other events by single-event drop (the deletion
    curve beyond the set's size)."""
    return best + [p for p in by_single if p not in best]


def eligible_rows(histories: torch.Tensor, min_history: int, size: int, seed: int) -> np.ndarray:
    """A seeded sample of rows whose history has at least ``min_history`` events."""
    lengths = (histories != 0).sum(dim=1).numpy()
    rows = np.flatnonzero(lengths >= min_history)
    if len(rows) > size:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))
    return rows


def _timed(call: Callable[[], Any], users: int) -> tuple[Any, float]:
    started = time.perf_counter()
    found = call()
    return found, (time.perf_counter() - started) * 1000 / max(users, 1)


def method_orders(
    bundle: ModelBundle, questions: list[Question], permutations: int, search_pool: int = POOL
) -> tuple[dict[str, list[list[int]]], dict[str, float]]:
    """Per method, each question's history positions from the most to the least
    influential (``group``: its ``CURVE`` greedy picks; ``beam``: the ``N_DELETE``-set a
    beam of width ``BEAM`` finds, then single drops), and the ms per user it took.
    Every method explains the same histories with all their events (``max_events =
    width``)."""
    width, model, n = bundle.max_len, bundle.model, len(questions)
    single, single_ms = _timed(lambda: deletion_influence(model, questions, width, width), n)
    group, group_ms = _timed(
        lambda: greedy_group_deletion(model, questions, width, width, CURVE), n
    )
    values, shapley_ms = _timed(
        lambda: shapley_values(model, questions, width, width, permutations=permutations), n
    )
    gradients, ig_ms = _timed(
        lambda: [
            integrated_gradients(model, q.history, int(q.targets[0]), width, IG_STEPS)
            for q in questions
        ],
        n,
    )
    beamed, beam_ms = _timed(
        lambda: greedy_group_deletion(model, questions, width, width, N_DELETE, beam=BEAM), n
    )
    picks = [[g[0].positions.tolist()] for g in group]
    searched, search_ms = _timed(
        lambda: best_deletion_sets(model, questions, width, N_DELETE, search_pool, picks), n
    )
    by_single = [ranked_positions(i.drops[0].numpy()) for i in single]
    orders = {
        "deletion": by_single,
        "group": [g[0].positions.tolist() for g in group],
        "beam": [
            searched_order(b[0].positions.tolist(), order)
            for b, order in zip(beamed, by_single, strict=True)
        ],
        "search": [
            searched_order(s[0].positions.tolist(), order)
            for s, order in zip(searched, by_single, strict=True)
        ],
        "shapley": [ranked_positions(v.values[0].numpy()) for v in values],
    }
    costs = {
        "deletion": single_ms,
        "group": group_ms,
        "beam": beam_ms,
        "search": search_ms + single_ms + group_ms,  # it starts from both
        "shapley": shapley_ms,
    }
    if all(g is not None for g in gradients):
        orders["ig"] = [ranked_positions(g.numpy()) for g in gradients if g is not None]
        costs["ig"] = ig_ms
    return orders, costs


@torch.no_grad()
def deletion_curves(
    bundle: ModelBundle,
    histories: list[torch.Tensor],
    targets: list[int],
    orders: dict[str, list[list[int]]],
    chunk: int = 1024,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per method ``[users, CURVE]`` score and rank drops of each user's target when the
    method's top ``m`` events are deleted together (``m = 1..CURVE``), and the targets'
    scores and ranks with the whole history."""
    width = bundle.max_len
    rows, wanted = [], []
    for user, (history, target) in enumerate(zip(histories, targets, strict=True)):
        rows.append(without_events(history, [], width))
        wanted.append(target)
        for name in orders:
            for m in range(1, CURVE + 1):
                rows.append(without_events(history, orders[name][user][:m], width))
                wanted.append(target)
    scores, ranks = [], []
    for start in range(0, len(rows), chunk):
        block = bundle.score(torch.stack(rows[start : start + chunk])).float()
        chosen = block.gather(1, torch.tensor(wanted[start : start + chunk])[:, None])
        scores.append(chosen[:, 0])
        ranks.append((block > chosen).sum(dim=1) + 1)
    per_user = 1 + len(orders) * CURVE
    score = torch.cat(scores).view(len(histories), per_user).numpy()
    rank = torch.cat(ranks).view(len(histories), per_user).numpy()
    drops, rank_drops = {}, {}
    for number, name in enumerate(orders):
        columns = slice(1 + number * CURVE, 1 + (number + 1) * CURVE)
        drops[name] = score[:, :1] - score[:, columns]
        rank_drops[name] = rank[:, columns] - rank[:, :1]
    return drops, rank_drops, score[:, 0], rank[:, 0]


@torch.no_grad()
def faithfulness(
    bundle: ModelBundle,
    histories: torch.Tensor,
    seed: int,
    permutations: int = SHAPLEY_PERMUTATIONS,
    search_pool: int = POOL,
    caps: list[int] | None = None,
) -> dict[str, Any]:
    """Deletion curves of every method and baseline over ``histories`` (each user's target:
    the model's top-1 recommendation, history items excluded): per method the mean score
    and rank drop with its top ``m`` events deleted together, the area over the curve (mean
    drop over ``m = 1..CURVE``), and the share of users where its top 3 drop the score
    strictly more than the 3 most recent / 3 random events. Each of ``caps`` adds a method
    ``deletion@cap``: deletion limited to the ``cap`` most recent events (the trade-off of
    a smaller ``serve.explain_max_history``), with the share of users whose unlimited top 3
    reach further back (``top3_beyond_cap_share``)."""
    top1, _ = bundle.recommend(histories, 1, exclude_seen=True)
    questions = [
        Question(row[row != 0][-bundle.max_len :], target)
        for row, target in zip(histories, top1, strict=True)
    ]
    orders, costs = method_orders(bundle, questions, permutations, search_pool)
    lengths = np.asarray([len(q.history) for q in questions])
    beyond: dict[str, float] = {}
    for cap in caps or []:
        name = f"deletion@{cap}"
        orders[name] = [
            capped_order(order, int(n), cap)
            for order, n in zip(orders["deletion"], lengths, strict=True)
        ]
        beyond[name] = float(
            np.mean(
                [
                    min(order[:N_DELETE]) < n - cap
                    for order, n in zip(orders["deletion"], lengths, strict=True)
                ]
            )
        )
    rng = np.random.default_rng(seed)
    for name in BASELINES:
        orders[name] = []
    for q in questions:
        for name, order in baseline_orders(len(q.history), rng).items():
            orders[name].append(order)
    drops, rank_drops, _, _ = deletion_curves(
        bundle, [q.history for q in questions], [int(q.targets[0]) for q in questions], orders
    )
    at = N_DELETE - 1
    methods: dict[str, Any] = {}
    for name in orders:
        short = drops[name][:, at] <= drops["recent"][:, at]  # not strictly above recent3
        methods[name] = {
            # what the users look like where the method's top 3 do not beat the recent 3:
            # how often its top 3 *are* the 3 most recent events, and their history length
            "top3_is_recent3_share": float(
                np.mean(
                    [
                        set(order[:N_DELETE]) == set(range(n - N_DELETE, n))
                        for order, n in zip(orders[name], lengths, strict=True)
                    ]
                )
            ),
            "history_length_not_above_recent3": float(lengths[short].mean())
            if short.any()
            else None,
            "history_length_above_recent3": float(lengths[~short].mean())
            if (~short).any()
            else None,
            "ms_per_user": round(costs[name], 2) if name in costs else None,
            "mean_score_drop": [round(float(x), 5) for x in drops[name].mean(axis=0)],
            "mean_rank_drop": [round(float(x), 2) for x in rank_drops[name].mean(axis=0)],
            "aopc": float(drops[name].mean()),
            "beats_recent3_share": float((drops[name][:, at] > drops["recent"][:, at]).mean()),
            "beats_random3_share": float((drops[name][:, at] > drops["random"][:, at]).mean()),
            "ties_recent3_share": float((drops[name][:, at] == drops["recent"][:, at]).mean()),
            "ties_random3_share": float((drops[name][:, at] == drops["random"][:, at]).mean()),
        }
        if name in beyond:
            methods[name]["top3_beyond_cap_share"] = beyond[name]
    return {
        "users": len(questions),
        "curve": CURVE,
        "shapley_permutations": permutations,
        "search_pool": search_pool,
        "mean_history_length": float(np.mean([len(q.history) for q in questions])),
        "methods": methods,
    }


def faithfulness_one(
    data: Path,
    fmt: str,
    model: str,
    *,
    max_epochs: int | None,
    users: int,
    min_history: int,
    seed: int,
    overrides: list[str],
    search_pool: int = POOL,
    caps: list[int] | None = None,
) -> tuple[dict[str, Any], Any, Any]:
    """Train ``model`` on ``data`` and measure faithfulness; returns (row, bundle, prepared)."""
    from components.lifecycle.prepare import prepare_dataset
    from components.lifecycle.train import train

    cfg = _model_config(model, data, fmt, max_epochs, overrides)
    prepared = prepare_dataset(cfg.data)
    with tempfile.TemporaryDirectory(prefix=f"bench-explain-{model}-") as tmp:
        started = time.perf_counter()
        result = train(prepared, cfg, Path(tmp) / "run").result
        train_s = time.perf_counter() - started
    bundle = result.bundle
    bundle.model.eval()
    test = prepared.split.test
    rows = eligible_rows(test.histories, min_history, users, seed)
    started = time.perf_counter()
    histories = test.histories[torch.from_numpy(rows)]
    figures = faithfulness(bundle, histories, seed, search_pool=search_pool, caps=caps)
    row = {
        "data": data.name,
        "model": model,
        "epochs": result.epochs,
        "max_epochs": cfg.train.max_epochs,
        "test_ndcg@10": result.metrics_test.get("ndcg@10"),
        "train_s": round(train_s, 1),
        "explain_s": round(time.perf_counter() - started, 1),
        "min_history": min_history,
        **figures,
    }
    return row, bundle, prepared


# --- latency ------------------------------------------------------------------------------
def latency_history(prepared: Any, length: int = LATENCY_HISTORY) -> list[str]:
    """The last ``length`` raw item ids of the user with the longest sequence."""
    longest = int(np.argmax(prepared.sequences.lengths))
    items = prepared.sequences.row(longest)[-length:]
    return prepared.vocab.item_tokens(items.tolist())


def _loadgen(url: str, concurrency: int, duration: float, body: dict[str, Any]) -> dict[str, Any]:
    from components.deploy.bento import REPO_ROOT

    cmd = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--body",
        json.dumps(body),
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 120, cwd=str(REPO_ROOT)
    )
    if done.returncode != 0:
        from components.errors import RecopsError

        raise RecopsError(f"load generator failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def warm_up(url: str, body: dict[str, Any], timeout_s: float = 120.0) -> None:
    """One request, answered before any is measured."""
    import urllib.request

    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        answer.read()


def http_latency(
    bundle: ModelBundle,
    history: list[str],
    levels: list[int],
    duration: float,
    cpu_threads: int,
    explain_history: int,
) -> list[dict[str, Any]]:
    """Deploy ``bundle`` as a real bento (``serve.explain_max_history = explain_history``)
    in a temporary workspace and load it over HTTP."""
    from benchmarks.serving import cpu_seconds
    from components.deploy.config import LocalDeployConfig, ServeConfig
    from components.deploy.local import deploy_version, free_port, read_state, stop_local
    from components.features.config import FeaturesConfig
    from components.records import RunRecord
    from components.registry.store import ModelRegistry
    from components.workspace import Workspace

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-explain-ws-") as tmp:
        ws = Workspace.at(Path(tmp) / "ws").activate()
        record = RunRecord(
            run_id="bench-explain",
            model_name=bundle.model_name,
            config={},
            config_hash="bench",
            code_rev="bench",
        )
        version = ModelRegistry(ws).register(bundle, record).version
        serve = ServeConfig(
            port=free_port(), cpu_threads=cpu_threads, explain_max_history=explain_history
        )
        deployed = deploy_version(
            ws,
            version,
            serve,
            LocalDeployConfig(readiness_timeout_s=300),
            FeaturesConfig(enabled=False),
        )
        try:
            state = read_state(ws)
            roles = [] if state is None else [state.proxy, state.backend]
            pids = [info.pid for info in roles if info is not None]
            # the first explanation exports the deletion graph (components/explain/compiled.py)
            warm_up(
                f"{deployed.url}/recommend", {"history": history, "k": LATENCY_K, "explain": True}
            )
            for level in levels:
                for explain in (False, True):
                    body = {"history": history, "k": LATENCY_K, "explain": explain}
                    before = cpu_seconds(pids)
                    figures = _loadgen(f"{deployed.url}/recommend", level, duration, body)
                    spent = cpu_seconds(pids) - before
                    rows.append(
                        {
                            "target": "bento",
                            "explain": explain,
                            "explain_max_history": explain_history,
                            **figures,
                            # proxy + bento CPU per request: what a request costs, whatever
                            # else the shared machine runs (latency is not)
                            "cpu_ms": round(spent * 1000 / max(1, figures["requests"]), 3),
                        }
                    )
        finally:
            stop_local(ws)
    return rows


def in_process_latency(
    bundle: ModelBundle,
    history: list[str],
    levels: list[int],
    duration: float,
    explain_history: int,
) -> list[dict[str, Any]]:
    """The same requests through ``Engine.recommend_local`` (``level`` plans per call)."""
    from services.engine import Engine
    from services.explanations import ExplainLimits

    limits = ExplainLimits(max_history=explain_history)
    engine = Engine(bundle, "bench", torch.device("cpu"), explain=limits)
    rows = []
    for level in levels:
        for explain in (False, True):

            def call(n: int = level, explain: bool = explain) -> None:
                plans = [
                    engine.plan(history, LATENCY_K, True, [], explain=explain) for _ in range(n)
                ]
                engine.recommend_local(plans)

            call()
            times = []
            cpu_before = time.process_time()
            until = time.perf_counter() + duration
            while time.perf_counter() < until:
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            cpu_ms = (time.process_time() - cpu_before) * 1000 / (len(times) * level)
            ms = np.asarray(times) * 1000.0
            p50, p99 = np.percentile(ms, [50, 99])
            rows.append(
                {
                    "target": "in-process",
                    "explain": explain,
                    "explain_max_history": explain_history,
                    "concurrency": level,
                    "requests": len(ms) * level,
                    "errors": 0,
                    "p50_ms": round(float(p50), 2),
                    "p99_ms": round(float(p99), 2),
                    "cpu_ms": round(cpu_ms, 3),
                }
            )
    return rows


def run_explain_benchmark(
    datasets: list[tuple[Path, str]],
    models: list[str],
    *,
    max_epochs: int | None,
    users: int,
    min_history: int,
    seed: int,
    levels: list[int],
    duration: float,
    latency: bool,
    explain_histories: list[int],
    overrides: list[str],
    progress: Callable[[str], None],
    search_pool: int = POOL,
    lock: Path | None = None,
    latency_models: list[str] | None = None,
    caps: list[int] | None = None,
) -> dict[str, Any]:
    """Faithfulness rows for every (dataset, model); latency for the first dataset's
    ``latency_models`` (default: its SASRec, or first model), holding ``lock`` (a shared
    measurement lock file) while each model is measured."""
    rows = []
    timed = latency_models or ["sasrec" if "sasrec" in models else models[0]]
    if unknown := sorted(set(timed) - set(models)):
        raise ConfigError(f"latency models {', '.join(unknown)} are not among --models")
    sources: list[tuple[ModelBundle, Any, str, Path]] = []
    for data, fmt in datasets:
        for model in models:
            row, bundle, prepared = faithfulness_one(
                data,
                fmt,
                model,
                max_epochs=max_epochs,
                users=users,
                min_history=min_history,
                seed=seed,
                overrides=overrides,
                search_pool=search_pool,
                caps=caps,
            )
            progress(
                f"{data.name} {model}: top-3 beats recent: "
                + ", ".join(
                    f"{name} {m['beats_recent3_share']:.1%}"
                    for name, m in row["methods"].items()
                    if name not in BASELINES
                )
                + f" ({row['users']} users)"
            )
            rows.append(row)
            if latency and data == datasets[0][0] and model in timed:
                sources.append((bundle, prepared, model, data))
    latency_rows: list[dict[str, Any]] = []
    setups: list[dict[str, Any]] = []
    for bundle, prepared, model, data in sources:
        rows_of_model, setup = model_latency(
            bundle, prepared, model, data, levels, duration, explain_histories, lock, progress
        )
        latency_rows += rows_of_model
        setups.append(setup)
        progress("\n".join(latency_table(setup, rows_of_model)))  # kept if a later model fails
    return {"faithfulness": rows, "latency": latency_rows, "latency_setup": setups}


def model_latency(
    bundle: ModelBundle,
    prepared: Any,
    model: str,
    data: Path,
    levels: list[int],
    duration: float,
    explain_histories: list[int],
    lock: Path | None,
    progress: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One model's latency rows (in process and over HTTP, every ``explain_max_history``)
    and its setup (load average before and after), measured under ``lock``."""
    history = latency_history(prepared)
    progress(f"latency: {model} on {data.name}, history length {len(history)}")
    rows: list[dict[str, Any]] = []
    with measurement_lock(lock) as load_before:
        for explain_history in explain_histories:
            rows += in_process_latency(bundle, history, levels, duration, explain_history)
            rows += http_latency(
                bundle, history, levels, duration, 1, explain_history=explain_history
            )
        load_after = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    setup = {
        "model": model,
        "data": data.name,
        "n_items": prepared.vocab.n_items,
        "history_length": len(history),
        "k": LATENCY_K,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    return [{"model": model, **row} for row in rows], setup


def format_tables(result: dict[str, Any]) -> str:
    """The faithfulness and latency tables (same figures as the JSON)."""
    lines = [
        f"{'data':<16}{'model':<9}{'epochs':>7}{'NDCG@10':>9}{'users':>7}  {'method':<10}"
        f"{'>recent3':>9}{'>random3':>9}{'=recent3':>9}{'same3':>7}{'=random3':>9}{'AOPC':>9}"
        f"{'score drop @1..' + str(CURVE):>36}{'rank drop @3':>13}{'ms/user':>9}"
        f"{'top3 older':>11}"
    ]
    for r in result["faithfulness"]:
        capped = f"{r['epochs']}/{r['max_epochs']}"
        head = f"{r['data']:<16}{r['model']:<9}{capped:>7}{r['test_ndcg@10']:>9.4f}{r['users']:>7}"
        for name, m in r["methods"].items():
            curve = " ".join(f"{x:.3f}" for x in m["mean_score_drop"])
            cost = "-" if m["ms_per_user"] is None else f"{m['ms_per_user']:.1f}"
            older = m.get("top3_beyond_cap_share")
            beyond = "-" if older is None else f"{older:.1%}"
            lines.append(
                f"{head}  {name:<10}{m['beats_recent3_share']:>9.1%}"
                f"{m['beats_random3_share']:>9.1%}{m['ties_recent3_share']:>9.1%}"
                f"{m['top3_is_recent3_share']:>7.1%}"
                f"{m.get('ties_random3_share', float('nan')):>9.1%}{m['aopc']:>9.3f}{curve:>36}{m['mean_rank_drop'][N_DELETE - 1]:>13.1f}{cost:>9}"
                f"{beyond:>11}"
            )
            head = " " * len(head)
    runs = result["faithfulness"]
    orders = runs[0]["shapley_permutations"] if runs else SHAPLEY_PERMUTATIONS
    lines.append(
        "epochs: run/cap. Each method ranks the history's events for the user's top-1 item; "
        f"its top m events are deleted together and the item re-scored (m = 1..{CURVE}). "
        ">recent3 / >random3: share of users whose top-3 deletion drops the score strictly "
        "more than deleting the 3 most recent / 3 random events; AOPC: mean score drop over "
        f"m = 1..{CURVE}. =recent3: equal drops; same3: the method's top 3 ARE the 3 most "
        "recent events (where recent3 is what the model leans on most, no method can beat "
        "it strictly). deletion: single-event drops; group: greedy group deletion; beam: "
        f"the {N_DELETE}-set a beam of width {BEAM} over joint deletions finds; search: "
        f"the most damaging {N_DELETE}-set among the top single drops, the greedy picks and the "
        f"{N_DELETE} most recent events (so never below recent3: =recent3 is where the recent "
        "events are that set), then single drops; shapley: "
        f"Shapley values of the deletion game ({orders} sampled orders, exact for <= 8 events); "
        f"ig: integrated gradients ({IG_STEPS} steps); deletion@H: deletion limited to the H "
        "most recent events (serve.explain_max_history = H); top3 older: share of users "
        "whose unlimited deletion top 3 include an event older than H. ms/user: one history "
        "explained (batched over users)."
    )
    setups = result.get("latency_setup", [])
    for setup in setups:
        lines += ["", *latency_table(setup, result["latency"])]
    if setups:
        lines.append(
            "events: serve.explain_max_history (most recent events deleted per request); "
            "ratio: explain / plain on the same deployment and concurrency; cpu ms/req: CPU "
            "time per request of the proxy and bento process trees (bento) or of this process "
            "(in-process), which, unlike latency, does not grow with the machine's load"
        )
    return "\n".join(lines)


def latency_table(setup: dict[str, Any], latency: list[dict[str, Any]]) -> list[str]:
    """The latency lines of the model ``setup`` names (rows without a model: the first)."""
    lines = [
        f"latency: {setup['model']} on {setup['data']} ({setup['n_items']} items), "
        f"history {setup['history_length']}, k={setup['k']}, load average "
        f"{setup.get('load_average_before', '?')} before, "
        f"{setup.get('load_average_after', '?')} after",
        f"{'target':<12}{'events':>7}{'conc':>5}{'explain':>9}{'requests':>10}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'errors':>8}{'p50 ratio':>11}{'p99 ratio':>11}{'cpu ms/req':>12}"
        f"{'cpu ratio':>11}",
    ]
    mine = [r for r in latency if r.get("model", setup["model"]) == setup["model"]]

    def key(r: dict[str, Any]) -> tuple[str, int, int]:
        return r["target"], r["explain_max_history"], r["concurrency"]

    plain = {key(r): r for r in mine if not r["explain"]}
    for r in sorted(mine, key=lambda r: (*key(r), r["explain"])):
        base = plain[key(r)]
        lines.append(
            f"{r['target']:<12}{r['explain_max_history']:>7}{r['concurrency']:>5}"
            f"{str(r['explain']):>9}{r['requests']:>10}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['errors']:>8}{r['p50_ms'] / max(base['p50_ms'], 1e-9):>11.2f}"
            f"{r['p99_ms'] / max(base['p99_ms'], 1e-9):>11.2f}"
            f"{_cpu_cell(r.get('cpu_ms')):>12}{_ratio_cell(r.get('cpu_ms'), base.get('cpu_ms')):>11}"
        )
    return lines


def _cpu_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio_cell(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}"
