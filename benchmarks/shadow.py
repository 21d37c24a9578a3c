"""``recops bench serving --shadow``: what an attached shadow costs the live public port.

A scratch workspace with two untrained SASRec versions over ``n_items`` items (the
sizes of ``bench serving --items``): the champion is deployed locally behind the proxy
and the second version attached as a shadow (mirroring every request). Then, per
concurrency level and repeat, back to back so a shared machine's drift hits all alike,
the public port is loaded (``wrk`` or the Python load generator, the same body as
``bench serving``) in three proxy states, switched by rewriting the proxy's target file
(the supervisor is off so nothing rewrites it back):

* ``plain``  - no challenger in the target: the byte pipe every deployment has;
* ``split``  - the challenger attached but (almost) nothing mirrored: the cost of
  reading requests one by one in the proxy;
* ``shadow`` - every ``/recommend`` mirrored to the shadow bento (its model runs on the
  same CPUs).

The summary gives the shadow's p50 and p99 cost against ``plain`` per level (target:
p50 within 10 %) and the mirror's counters (mirrored, dropped, timeouts).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.serving import BODY_K, _register_untrained, load
from components.deploy import local
from components.deploy.challenger import attach, split_stats
from components.deploy.config import ChallengerConfig, LocalDeployConfig, ServeConfig
from components.features.config import FeaturesConfig
from components.net import free_port
from components.workspace import Workspace

TARGET_P50_COST = 0.10
STATES = ("plain", "split", "shadow")
SETTLE_S = 0.5


def _set_state(ws: Workspace, which: str) -> None:
    """Point the proxy's target file at the champion alone, or with the shadow attached
    mirroring (almost) nothing or everything."""
    state = local.read_state(ws)
    assert state is not None and state.challenger is not None
    if which == "plain":
        view = state.model_copy(update={"challenger": None})
    else:
        share = 1e-9 if which == "split" else 1.0
        settings = {**state.challenger.settings, "share": share}
        challenger = state.challenger.model_copy(update={"settings": settings})
        view = state.model_copy(update={"challenger": challenger})
    local.point_target(ws, view)
    time.sleep(SETTLE_S)


def run_shadow_benchmark(
    n_items: int, levels: list[int], duration_s: float, repeats: int = 2, device: str = "cpu"
) -> dict[str, Any]:
    """Measure the three proxy states at each level (see module doc)."""
    root = Path(tempfile.mkdtemp(prefix="recops-bench-shadow-"))
    ws = Workspace.at(root).activate()
    try:
        champion = _register_untrained(ws, n_items, seed=0)
        challenger = _register_untrained(ws, n_items, seed=1)
        serve_cfg = ServeConfig.model_validate({"port": free_port(), "device": device})
        deploy_cfg = LocalDeployConfig(
            readiness_timeout_s=300,
            switch_drain_s=0.0,
            supervise=False,
            challenger=ChallengerConfig(queue=1024),
        )
        features = FeaturesConfig(enabled=False)
        deployed = local.deploy_version(ws, champion, serve_cfg, deploy_cfg, features)
        attach(ws, challenger, "shadow", serve_cfg, deploy_cfg, features, actor="bench")
        url = f"{deployed.url}/recommend"
        meta_items = [f"i{j}" for j in range(min(5, n_items))]
        body = {"history": meta_items, "k": BODY_K}
        rows = []
        for level in levels:
            for repeat in range(repeats):
                for which in STATES:
                    _set_state(ws, which)
                    row = load(url, level, duration_s, body, {})
                    rows.append({"state": which, "concurrency": level, "repeat": repeat, **row})
        mirror = split_stats(ws)
        return {
            "benchmark": "serving-shadow",
            "model": f"untrained sasrec (64-d, 2 layers), {n_items} items, two versions",
            "request": body,
            "duration_s_per_run": duration_s,
            "repeats": repeats,
            "rows": rows,
            "summary": summarise(rows),
            "mirror": {
                k: mirror.get(k)
                for k in ("mirrored", "dropped", "mirror_timeouts", "mirror_errors")
            },
            "shadow_latency": mirror.get("challenger"),
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "platform": platform.platform(),
            },
        }
    finally:
        local.stop_local(ws)
        shutil.rmtree(root, ignore_errors=True)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level: median p50/p99/rps per state and the shadow's cost against plain."""
    out = []
    for level in sorted({r["concurrency"] for r in rows}):
        med: dict[str, dict[str, float]] = {}
        for which in STATES:
            mine = [r for r in rows if r["concurrency"] == level and r["state"] == which]
            med[which] = {
                key: statistics.median(float(r[key]) for r in mine)
                for key in ("p50_ms", "p99_ms", "rps")
            }
            med[which]["errors"] = sum(int(r["errors"]) for r in mine)
        cost = med["shadow"]["p50_ms"] / med["plain"]["p50_ms"] - 1
        out.append(
            {
                "concurrency": level,
                **{f"{w}_{k}": round(v, 2) for w in STATES for k, v in med[w].items()},
                "p50_cost": round(cost, 3),
                "split_p50_cost": round(med["split"]["p50_ms"] / med["plain"]["p50_ms"] - 1, 3),
                "p99_cost": round(med["shadow"]["p99_ms"] / med["plain"]["p99_ms"] - 1, 3),
                "meets_target": cost <= TARGET_P50_COST,
            }
        )
    return out


def render_table(result: dict[str, Any]) -> str:
    lines = [
        f"shadow cost on the public port ({result['model']}; median of {result['repeats']} "
        f"x {result['duration_s_per_run']:.0f} s per state)",
        f"{'c':>4}{'plain p50':>11}{'split p50':>11}{'shadow p50':>12}{'p50 cost':>10}"
        f"{'p99 cost':>10}{'plain rps':>11}{'shadow rps':>12}{'errors':>8}  target",
    ]
    for s in result["summary"]:
        lines.append(
            f"{s['concurrency']:>4}{s['plain_p50_ms']:>11.2f}{s['split_p50_ms']:>11.2f}"
            f"{s['shadow_p50_ms']:>12.2f}{s['p50_cost']:>+10.1%}{s['p99_cost']:>+10.1%}"
            f"{s['plain_rps']:>11.0f}{s['shadow_rps']:>12.0f}{int(s['shadow_errors']):>8}"
            f"  {'ok' if s['meets_target'] else 'MISSED'} (<= {TARGET_P50_COST:.0%})"
        )
    m = result["mirror"]
    lines.append(
        f"mirror: {m['mirrored']} mirrored, {m['dropped']} dropped (queue full), "
        f"{m['mirror_timeouts']} timeouts, {m['mirror_errors']} errors"
    )
    return "\n".join(lines)
