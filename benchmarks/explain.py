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

**Latency**: the trained SASRec of the first dataset is registered in a temporary
workspace and deployed as a real bento (no feature store); ``POST /recommend`` with a
real 50-event history and k=10, with and without ``"explain": true``, at concurrency 1
and 8 (closed loop, ``benchmarks.loadgen`` in its own process), plus the same calls
in-process through :class:`services.engine.Engine` (no HTTP).
"""

from __future__ import annotations

import json
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
from components.explain.gradients import integrated_gradients
from components.explain.influence import Question, deletion_influence
from components.models.bundle import ModelBundle

STRATEGIES = ("top3", "random3", "recent3")  # + "ig3" where integrated gradients apply
IG_STEPS = 16
N_DELETE = 3
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


def deletion_sets(
    drops: np.ndarray,
    length: int,
    rng: np.random.Generator,
    gradients: np.ndarray | None = None,
) -> dict[str, list[int]]:
    """Positions (into a history of ``length``) each strategy deletes; ``drops`` are the
    single-event deletion influences of every event, ``gradients`` their integrated
    gradients (``ig3``, when the model has them)."""
    order = np.argsort(-drops, kind="stable")
    sets = {
        "top3": sorted(order[:N_DELETE].tolist()),
        "random3": sorted(rng.choice(length, N_DELETE, replace=False).tolist()),
        "recent3": list(range(length - N_DELETE, length)),
    }
    if gradients is not None:
        sets["ig3"] = sorted(np.argsort(-gradients, kind="stable")[:N_DELETE].tolist())
    return sets


def eligible_rows(histories: torch.Tensor, min_history: int, size: int, seed: int) -> np.ndarray:
    """A seeded sample of rows whose history has at least ``min_history`` events."""
    lengths = (histories != 0).sum(dim=1).numpy()
    rows = np.flatnonzero(lengths >= min_history)
    if len(rows) > size:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))
    return rows


@torch.no_grad()
def faithfulness(
    bundle: ModelBundle, histories: torch.Tensor, seed: int, chunk: int = 1024
) -> dict[str, Any]:
    """Per-strategy mean score/rank drop and the top-3 win shares over ``histories``."""
    width = bundle.max_len
    top1, _ = bundle.recommend(histories, 1, exclude_seen=True)
    questions = [
        Question(row[row != 0], target) for row, target in zip(histories, top1, strict=True)
    ]
    started = time.perf_counter()
    influences = deletion_influence(bundle.model, questions, width, max_events=width)
    deletion_ms = (time.perf_counter() - started) * 1000 / max(len(questions), 1)
    started = time.perf_counter()
    gradients = [
        integrated_gradients(bundle.model, q.history, int(q.targets), width, IG_STEPS)
        for q in questions
    ]
    ig_ms = (time.perf_counter() - started) * 1000 / max(len(questions), 1)
    has_ig = all(g is not None for g in gradients)
    strategies = [*STRATEGIES, "ig3"] if has_ig else list(STRATEGIES)
    rng = np.random.default_rng(seed)
    variant_rows, targets, same = [], [], []
    for influence, gradient in zip(influences, gradients, strict=True):
        history = influence.history
        sets = deletion_sets(
            influence.drops[0].numpy(),
            len(history),
            rng,
            gradient.numpy() if has_ig and gradient is not None else None,
        )
        variant_rows += [without_events(history, sets[s], width) for s in strategies]
        targets.append(int(influence.targets[0]))
        same.append(sets["top3"] == sets["recent3"])
    target_index = torch.tensor(targets).repeat_interleave(len(strategies))
    scores, ranks = [], []
    for start in range(0, len(variant_rows), chunk):
        block = bundle.score(torch.stack(variant_rows[start : start + chunk])).float()
        wanted = block.gather(1, target_index[start : start + chunk, None])
        scores.append(wanted[:, 0])
        ranks.append((block > wanted).sum(dim=1) + 1)
    after = torch.cat(scores).view(-1, len(strategies)).numpy()
    rank_after = torch.cat(ranks).view(-1, len(strategies)).numpy()
    base = np.array([float(i.scores[0]) for i in influences])
    base_rank = np.array([int(i.ranks[0]) for i in influences])
    drop = base[:, None] - after
    rank_drop = rank_after - base_rank[:, None]
    out: dict[str, Any] = {
        "users": len(influences),
        "deletion_ms_per_user": round(deletion_ms, 2),
        "ig_ms_per_user": round(ig_ms, 2) if has_ig else None,
        "ig_beats_random_share": float((drop[:, 3] > drop[:, 1]).mean()) if has_ig else None,
        "top3_beats_ig_share": float((drop[:, 0] > drop[:, 3]).mean()) if has_ig else None,
    }
    for column, name in enumerate(strategies):
        out[f"{name}_mean_score_drop"] = float(drop[:, column].mean())
        out[f"{name}_mean_rank_drop"] = float(rank_drop[:, column].mean())
    out["top3_beats_random_share"] = float((drop[:, 0] > drop[:, 1]).mean())
    out["top3_beats_recent_share"] = float((drop[:, 0] > drop[:, 2]).mean())
    out["top3_is_recent3_share"] = float(np.mean(same))
    out["mean_history_length"] = float(np.mean([len(i.history) for i in influences]))
    return out


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
    figures = faithfulness(bundle, test.histories[torch.from_numpy(rows)], seed)
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
    from components.deploy.config import LocalDeployConfig, ServeConfig
    from components.deploy.local import deploy_version, free_port, stop_local
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
            for level in levels:
                for explain in (False, True):
                    body = {"history": history, "k": LATENCY_K, "explain": explain}
                    figures = _loadgen(f"{deployed.url}/recommend", level, duration, body)
                    rows.append(
                        {
                            "target": "bento",
                            "explain": explain,
                            "explain_max_history": explain_history,
                            **figures,
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
            until = time.perf_counter() + duration
            while time.perf_counter() < until:
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
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
) -> dict[str, Any]:
    """Faithfulness rows for every (dataset, model); latency on the first dataset's SASRec
    (or first model)."""
    rows = []
    latency_source = None
    latency_model = "sasrec" if "sasrec" in models else models[0]
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
            )
            progress(
                f"{data.name} {model}: top-3 beats random {row['top3_beats_random_share']:.1%}, "
                f"beats recent {row['top3_beats_recent_share']:.1%} ({row['users']} users)"
            )
            rows.append(row)
            first_data = data == datasets[0][0]
            if latency_source is None and first_data and model in ("sasrec", latency_model):
                latency_source = (bundle, prepared, model, data)
    latency_rows: list[dict[str, Any]] = []
    latency_info: dict[str, Any] = {}
    if latency and latency_source is not None:
        bundle, prepared, model, data = latency_source
        history = latency_history(prepared)
        progress(f"latency: {model} on {data.name}, history length {len(history)}")
        for explain_history in explain_histories:
            latency_rows += in_process_latency(bundle, history, levels, duration, explain_history)
            latency_rows += http_latency(
                bundle, history, levels, duration, 1, explain_history=explain_history
            )
        latency_info = {
            "model": model,
            "data": data.name,
            "n_items": prepared.vocab.n_items,
            "history_length": len(history),
            "k": LATENCY_K,
        }
    return {"faithfulness": rows, "latency": latency_rows, "latency_setup": latency_info}


def format_tables(result: dict[str, Any]) -> str:
    """The faithfulness and latency tables (same figures as the JSON)."""
    lines = [
        f"{'data':<16}{'model':<9}{'epochs':>7}{'NDCG@10':>9}{'users':>7}"
        f"{'top3>rand':>10}{'top3>recent':>12}{'=recent':>8}"
        f"{'score drop top3/rand/recent':>30}{'rank drop top3/rand/recent':>32}"
    ]
    for r in result["faithfulness"]:
        capped = f"{r['epochs']}/{r['max_epochs']}"
        lines.append(
            f"{r['data']:<16}{r['model']:<9}{capped:>7}{r['test_ndcg@10']:>9.4f}{r['users']:>7}"
            f"{r['top3_beats_random_share']:>10.1%}{r['top3_beats_recent_share']:>12.1%}"
            f"{r['top3_is_recent3_share']:>8.1%}"
            f"{r['top3_mean_score_drop']:>12.3f}{r['random3_mean_score_drop']:>9.3f}"
            f"{r['recent3_mean_score_drop']:>9.3f}"
            f"{r['top3_mean_rank_drop']:>12.1f}{r['random3_mean_rank_drop']:>10.1f}"
            f"{r['recent3_mean_rank_drop']:>10.1f}"
        )
    lines.append(
        "epochs: run/cap. Share of users whose top-3-by-influence deletion drops the top-1 item's "
        "score strictly more than 3 random / the 3 most recent events; '=recent': top-3 were the "
        "3 most recent."
    )
    with_ig = [r for r in result["faithfulness"] if r.get("ig_ms_per_user") is not None]
    if with_ig:
        lines.append(
            f"{'data':<16}{'model':<9}{'IG>rand':>9}{'del>IG':>8}{'score drop IG':>15}"
            f"{'rank drop IG':>14}{'ms/user deletion':>18}{'ms/user IG':>12}"
        )
        for r in with_ig:
            lines.append(
                f"{r['data']:<16}{r['model']:<9}{r['ig_beats_random_share']:>9.1%}"
                f"{r['top3_beats_ig_share']:>8.1%}{r['ig3_mean_score_drop']:>15.3f}"
                f"{r['ig3_mean_rank_drop']:>14.1f}{r['deletion_ms_per_user']:>18.1f}"
                f"{r['ig_ms_per_user']:>12.1f}"
            )
        lines.append(
            f"IG: top-3 events by integrated gradients ({IG_STEPS} steps, zero-embedding "
            "baseline) deleted together; 'del>IG': top-3 by deletion drops the score strictly "
            "more than top-3 by IG; ms/user: one history's attribution (deletion: all users "
            "batched)."
        )
    if result["latency"]:
        setup = result["latency_setup"]
        lines += [
            "",
            f"latency: {setup['model']} on {setup['data']} ({setup['n_items']} items), "
            f"history {setup['history_length']}, k={setup['k']}",
            f"{'target':<12}{'events':>7}{'conc':>5}{'explain':>9}{'requests':>10}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'errors':>8}{'p50 ratio':>11}{'p99 ratio':>11}",
        ]

        def key(r: dict[str, Any]) -> tuple[str, int, int]:
            return r["target"], r["explain_max_history"], r["concurrency"]

        plain = {key(r): r for r in result["latency"] if not r["explain"]}
        for r in sorted(result["latency"], key=lambda r: (*key(r), r["explain"])):
            base = plain[key(r)]
            lines.append(
                f"{r['target']:<12}{r['explain_max_history']:>7}{r['concurrency']:>5}"
                f"{str(r['explain']):>9}{r['requests']:>10}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                f"{r['errors']:>8}{r['p50_ms'] / max(base['p50_ms'], 1e-9):>11.2f}"
                f"{r['p99_ms'] / max(base['p99_ms'], 1e-9):>11.2f}"
            )
        lines.append(
            "events: serve.explain_max_history (most recent events deleted per request); "
            "ratio: explain / plain on the same deployment and concurrency"
        )
    return "\n".join(lines)
