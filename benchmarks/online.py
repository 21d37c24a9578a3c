"""``recops bench online``: how fast the online decision finds a better challenger, and how
often it promotes an equal one, by simulation through the real comparison code.

A synthetic world: each request comes from a new user with true item preferences
``u ~ N(0, 1)`` over ``n_items``; the user's next event is one item drawn from
``softmax(temperature * u)``. A version ranks the catalogue by ``u + noise`` and serves
its top-k; the champion's noise has standard deviation ``sigma``, a *better* challenger's
``sigma * better_ratio`` (it sees the users' world more clearly), an *equal* one's
``sigma`` (independent draws). The served lists and the feedback (the next item, naming
the request id) are written in the serving log's own schemas and handed to
:func:`components.deploy.online.compare` with ``min_lists`` set to the horizon, so the
decision is exactly what ``recops deploy conclude`` would do on those logs.

* shadow: both versions answer every request (paired, McNemar);
* canary: requests are split half and half by user (two-proportion test).

Per horizon (total requests) and mode: the share of seeds where a better challenger is
promoted (power) and where an equal one is promoted (false promotion rate, to hold at
most ``alpha``).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from components.deploy.online import compare
from components.monitoring.servelog import FEEDBACK_SCHEMA, SERVED_SCHEMA

CHAMPION, CHALLENGER = "champion-v1", "challenger-v2"


@dataclass(frozen=True)
class World:
    """The simulation's knobs."""

    n_items: int = 300
    k: int = 10
    temperature: float = 1.5
    sigma: float = 1.0
    better_ratio: float = 0.6
    alpha: float = 0.05


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def simulate_logs(
    world: World, n_requests: int, better: bool, mode: str, seed: int
) -> tuple[pa.Table, pa.Table]:
    """(served, feedback) tables for ``n_requests`` requests in this world."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n_requests, world.n_items))
    p = np.exp(world.temperature * (u - u.max(axis=1, keepdims=True)))
    p /= p.sum(axis=1, keepdims=True)
    nxt = (p.cumsum(axis=1) > rng.random((n_requests, 1))).argmax(axis=1)
    sigma_b = world.sigma * (world.better_ratio if better else 1.0)
    lists = {
        CHAMPION: _top_k(u + world.sigma * rng.standard_normal(u.shape), world.k),
        CHALLENGER: _top_k(u + sigma_b * rng.standard_normal(u.shape), world.k),
    }
    ids = np.array([f"r{seed}-{i}" for i in range(n_requests)])
    arm_of = rng.random(n_requests) < 0.5  # canary: True = challenger's user
    served = []
    for version, top in lists.items():
        keep = (
            np.ones(n_requests, bool)
            if mode == "shadow"
            else (arm_of if version == CHALLENGER else ~arm_of)
        )
        served.append(_served(ids[keep], top[keep], version))
    feedback = pa.table(
        {
            "user_id": pa.array([f"u{i}" for i in range(n_requests)], pa.string()),
            "item_id": pa.array([f"i{j}" for j in nxt], pa.string()),
            "timestamp": pa.array(np.zeros(n_requests, np.int64)).cast(
                FEEDBACK_SCHEMA.field("timestamp").type
            ),
            "event_type": pa.array(["click"] * n_requests, pa.string()),
            "value": pa.array([None] * n_requests, pa.float64()),
            "request_id": pa.array(ids, pa.string()),
            "received_at": pa.array(np.zeros(n_requests, np.int64)).cast(
                FEEDBACK_SCHEMA.field("received_at").type
            ),
        },
        schema=FEEDBACK_SCHEMA,
    )
    return pa.concat_tables(served), feedback


def _served(ids: np.ndarray, top: np.ndarray, version: str) -> pa.Table:
    n, k = top.shape
    items = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)),
        pa.array([f"i{j}" for j in top.ravel()], pa.string()),
    )
    scores = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)),
        pa.array(np.zeros(n * k, np.float32)),
    )
    columns = {
        "request_id": pa.array(ids, pa.string()),
        "ts": pa.array(np.zeros(n, np.int64)).cast(SERVED_SCHEMA.field("ts").type),
        "user_id": pa.array([None] * n, pa.string()),
        "history_len": pa.array(np.zeros(n, np.int32)),
        "unknown_items": pa.array(np.zeros(n, np.int32)),
        "source": pa.array(["model"] * n, pa.string()),
        "model_version": pa.array([version] * n, pa.string()),
        "items": items,
        "scores": scores,
    }
    # columns the simulation has nothing for (e.g. the history) are null
    arrays = [columns.get(f.name, pa.nulls(n, f.type)) for f in SERVED_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SERVED_SCHEMA)


def decide_once(world: World, n_requests: int, better: bool, mode: str, seed: int) -> dict:
    """One simulated test at a fixed horizon: the decision and both hit-rates."""
    served, feedback = simulate_logs(world, n_requests, better, mode, seed)
    horizon = n_requests if mode == "shadow" else n_requests // 2 - 3 * int(n_requests**0.5)
    c = compare(
        served,
        feedback,
        mode=mode,
        champion=CHAMPION,
        challenger=CHALLENGER,
        k=world.k,
        alpha=world.alpha,
        min_lists=max(1, horizon),
    )
    return {
        "decision": c.decision,
        "champion_hr": c.champion.hit_rate.value,
        "challenger_hr": c.challenger.hit_rate.value,
        "p_value": c.p_value,
    }


def run_online_benchmark(
    horizons: list[int], seeds: int, world: World | None = None
) -> dict[str, Any]:
    """Power and false promotion rate per mode and horizon over ``seeds`` simulations."""
    world = world or World()
    started = time.perf_counter()
    rows = []
    for mode in ("shadow", "canary"):
        for n in horizons:
            better = [decide_once(world, n, True, mode, s) for s in range(seeds)]
            equal = [decide_once(world, n, False, mode, 1000 + s) for s in range(seeds)]
            rows.append(
                {
                    "mode": mode,
                    "requests": n,
                    "power": _share(better, "promote"),
                    "false_promotion": _share(equal, "promote"),
                    "undecided": _share(better + equal, "undecided"),
                    "champion_hr": _mean(better, "champion_hr"),
                    "better_challenger_hr": _mean(better, "challenger_hr"),
                    "equal_challenger_hr": _mean(equal, "challenger_hr"),
                }
            )
    return {
        "world": world.__dict__,
        "seeds": seeds,
        "rows": rows,
        "found_within": _found_within(rows),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": platform.node(),
    }


def _share(results: list[dict], decision: str) -> float:
    return sum(r["decision"] == decision for r in results) / len(results)


def _mean(results: list[dict], key: str) -> float | None:
    values = [r[key] for r in results if r[key] is not None]
    return float(np.mean(values)) if values else None


def _found_within(rows: list[dict]) -> dict[str, int | None]:
    """Per mode, the smallest horizon at which >= 80 % of the better challengers won."""
    out: dict[str, int | None] = {}
    for mode in ("shadow", "canary"):
        hits = [r["requests"] for r in rows if r["mode"] == mode and r["power"] >= 0.8]
        out[mode] = min(hits) if hits else None
    return out


def render_table(result: dict[str, Any]) -> str:
    w = result["world"]
    lines = [
        f"online decision, {result['seeds']} seeds per cell, alpha {w['alpha']}, "
        f"k {w['k']}, {w['n_items']} items, better = noise x{w['better_ratio']}",
        f"{'mode':<8}{'requests':>9}{'power':>8}{'false+':>8}{'undec.':>8}"
        f"{'HR champ':>10}{'HR better':>10}{'HR equal':>10}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['mode']:<8}{r['requests']:>9}{r['power']:>8.2f}{r['false_promotion']:>8.2f}"
            f"{r['undecided']:>8.2f}{_f(r['champion_hr']):>10}{_f(r['better_challenger_hr']):>10}"
            f"{_f(r['equal_challenger_hr']):>10}"
        )
    found = ", ".join(
        f"{m}: {n if n else 'not within the horizons'}" for m, n in result["found_within"].items()
    )
    lines.append(f"better challenger promoted in >= 80% of seeds within (requests): {found}")
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
