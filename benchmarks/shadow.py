"""``recops bench serving --shadow``: what an attached shadow costs the live public port.

A scratch workspace with two untrained SASRec versions over ``n_items`` items (the
sizes of ``bench serving --items``): the champion is deployed locally behind the proxy
and the second version attached as a shadow with the product's defaults (every request
mirrored, queue 256, 2 s timeout, CPU priority ``idle``). Then, per concurrency level
and repeat, back to back so a shared machine's drift hits all alike, the public port is
loaded (``wrk`` or the Python load generator, the same body as ``bench serving``) in
four states, switched by rewriting the proxy's target file and the shadow's priority
(the supervisor is off so nothing rewrites them back):

* ``plain``  - no challenger in the target: the byte pipe every deployment has;
* ``split``  - the challenger attached but (almost) nothing mirrored: the cost of
  reading requests one by one in the proxy;
* ``shadow_normal`` - every ``/recommend`` mirrored to a shadow at normal CPU priority
  (its model competes with the champion's: the cost before components/deploy/priority.py);
* ``shadow_idle`` - the same at ``SCHED_IDLE`` (the default): the shadow gets the CPU the
  champion leaves; the copies it cannot keep up with are dropped (queue full) or time out;
* ``shadow_gated`` - idle and ``mirror_max_live: 0``: a copy is only sent while no live
  request is open at the proxy (dropped as stale after ``timeout_s``).

Between states the mirror queue is drained. The summary gives each shadow state's p50
and p99 cost against ``plain`` per level (target: p50 within 10 %) and its copies:
made, dropped (queue full or stale), timed out, and the share the shadow answered.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.serving import BODY_K, _register_untrained, load
from components.deploy import local
from components.deploy.challenger import attach, split_stats
from components.deploy.config import LocalDeployConfig, ServeConfig
from components.deploy.priority import Priority
from components.features.config import FeaturesConfig
from components.net import free_port
from components.workspace import Workspace

TARGET_P50_COST = 0.10
STATES = ("plain", "split", "shadow_normal", "shadow_idle", "shadow_gated")
SHADOWS = ("shadow_normal", "shadow_idle", "shadow_gated")
SETTLE_S = 0.7  # the proxy writes its counters every 0.5 s
DRAIN_S = 15.0
ROLES = ("proxy", "champion", "shadow")
COUNTERS = ("mirrored", "dropped", "mirror_timeouts", "mirror_errors", "mirror_stale")


def _set_state(ws: Workspace, which: str) -> bool:
    """Point the proxy's target file at the champion alone, or with the shadow attached
    mirroring (almost) nothing or everything at the state's CPU priority; False when the
    priority cannot be set (raising it back to normal needs CAP_SYS_NICE)."""
    state = local.read_state(ws)
    assert state is not None and state.challenger is not None
    _drain(ws)
    if which in SHADOWS:
        wanted: Priority = "normal" if which == "shadow_normal" else "idle"
        if not local.set_cpu_priority(state.challenger.backend, wanted):
            return False
    if which == "plain":
        view = state.model_copy(update={"challenger": None})
    else:
        share = 1e-9 if which == "split" else 1.0
        gate = 0 if which == "shadow_gated" else None
        settings = {**state.challenger.settings, "share": share, "max_live": gate}
        challenger = state.challenger.model_copy(update={"settings": settings})
        view = state.model_copy(update={"challenger": challenger})
    local.point_target(ws, view)
    time.sleep(SETTLE_S)
    return True


def _drain(ws: Workspace) -> None:
    """Wait (at most DRAIN_S) until the copies of the previous state left the queue."""
    deadline = time.monotonic() + DRAIN_S
    while split_stats(ws).get("queue_depth", 0) and time.monotonic() < deadline:
        time.sleep(0.2)


def _counters(ws: Workspace) -> dict[str, int]:
    time.sleep(SETTLE_S)
    stats = split_stats(ws)
    answered = stats.get("challenger", {}).get("requests", 0) - stats.get("mirror_errors", 0)
    return {**{k: int(stats.get(k, 0)) for k in COUNTERS}, "answered": int(answered)}


def _cpu_by_role(ws: Workspace) -> dict[str, float]:
    """CPU seconds so far of the proxy, the champion's and the shadow's process trees."""
    state = local.read_state(ws)
    assert state is not None and state.challenger is not None
    roles = {
        "proxy": state.proxy,
        "champion": state.backend,
        "shadow": state.challenger.backend,
    }
    out: dict[str, float] = {}
    for role, info in roles.items():
        out[role] = 0.0
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if info is not None and proc.environ().get(local.PROC_ENV) == info.proc_id:
                    times = proc.cpu_times()
                    out[role] += times.user + times.system
    return out


def _cpu_per_request(
    before: dict[str, float], after: dict[str, float], requests: int
) -> dict[str, float]:
    """Each role's CPU milliseconds per live request during one run."""
    n = max(1, requests)
    return {f"cpu_ms_{r}": round((after[r] - before[r]) * 1000 / n, 3) for r in after}


def _mirror_row(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """What the shadow did with one run's copies (counters' difference)."""
    d = {k: after[k] - before[k] for k in after}
    made = d["mirrored"] + d["dropped"]
    return {
        **d,
        "drop_share": (d["dropped"] + d["mirror_stale"]) / made if made else None,
        "answered_share": d["answered"] / made if made else None,
    }


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
        deploy_cfg = LocalDeployConfig(readiness_timeout_s=300, switch_drain_s=0.0, supervise=False)
        features = FeaturesConfig(enabled=False)
        deployed = local.deploy_version(ws, champion, serve_cfg, deploy_cfg, features)
        attach(ws, challenger, "shadow", serve_cfg, deploy_cfg, features, actor="bench")
        url = f"{deployed.url}/recommend"
        meta_items = [f"i{j}" for j in range(min(5, n_items))]
        body = {"history": meta_items, "k": BODY_K}
        rows, skipped = [], set()
        for level in levels:
            for repeat in range(repeats):
                for which in STATES:
                    if not _set_state(ws, which):
                        skipped.add(which)
                        continue
                    before, cpu_before = _counters(ws), _cpu_by_role(ws)
                    row = load(url, level, duration_s, body, {})
                    cpu = _cpu_per_request(cpu_before, _cpu_by_role(ws), int(row["requests"]))
                    mirror_row = _mirror_row(before, _counters(ws)) if which in SHADOWS else {}
                    rows.append(
                        {
                            "state": which,
                            "concurrency": level,
                            "repeat": repeat,
                            **row,
                            **cpu,
                            **{f"mirror_{k}": v for k, v in mirror_row.items()},
                        }
                    )
        mirror = split_stats(ws)
        return {
            "benchmark": "serving-shadow",
            "model": f"untrained sasrec (64-d, 2 layers), {n_items} items, two versions",
            "request": body,
            "duration_s_per_run": duration_s,
            "repeats": repeats,
            "rows": rows,
            "summary": summarise(rows),
            "skipped_states": sorted(skipped),
            "mirror": {k: mirror.get(k) for k in COUNTERS},
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
    """Per level: median p50/p99/rps per state, each shadow state's cost against plain
    and its copies (summed over repeats: made, dropped, timed out, answered share)."""
    out = []
    for level in sorted({r["concurrency"] for r in rows}):
        mine = [r for r in rows if r["concurrency"] == level]
        med = {w: _medians([r for r in mine if r["state"] == w]) for w in STATES}
        entry: dict[str, Any] = {"concurrency": level}
        for which, m in med.items():
            entry.update({f"{which}_{k}": round(v, 2) for k, v in m.items()})
        plain = med["plain"]
        if plain and med["split"]:
            entry["split_p50_cost"] = round(med["split"]["p50_ms"] / plain["p50_ms"] - 1, 3)
        for which in SHADOWS:
            if not plain or not med[which]:
                continue
            cost = med[which]["p50_ms"] / plain["p50_ms"] - 1
            entry[f"{which}_p50_cost"] = round(cost, 3)
            entry[f"{which}_p99_cost"] = round(med[which]["p99_ms"] / plain["p99_ms"] - 1, 3)
            entry[f"{which}_meets_target"] = cost <= TARGET_P50_COST
            entry[f"{which}_copies"] = _copies([r for r in mine if r["state"] == which])
        out.append(entry)
    return out


def _medians(rows: list[dict[str, Any]]) -> dict[str, float]:
    if not rows:
        return {}
    keys = ("p50_ms", "p99_ms", "rps", "cpu_ms_proxy", "cpu_ms_champion", "cpu_ms_shadow")
    med = {k: statistics.median(float(r[k]) for r in rows) for k in keys}
    med["errors"] = sum(int(r["errors"]) for r in rows)
    return med


def _copies(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (*COUNTERS, "answered")
    total: dict[str, Any] = {k: sum(int(r.get(f"mirror_{k}", 0)) for r in rows) for k in keys}
    made = total["mirrored"] + total["dropped"]
    lost = total["dropped"] + total["mirror_stale"]
    total["drop_share"] = round(lost / made, 3) if made else None
    total["answered_share"] = round(total["answered"] / made, 3) if made else None
    return total


def render_table(result: dict[str, Any]) -> str:
    lines = [
        f"shadow cost on the public port ({result['model']}; median of {result['repeats']} "
        f"x {result['duration_s_per_run']:.0f} s per state)",
        f"{'c':>4}  {'state':<14}{'p50 ms':>9}{'p99 ms':>9}{'rps':>7}{'p50 cost':>10}"
        f"{'p99 cost':>10}{'copies':>8}{'dropped':>9}{'t/o':>6}{'answered':>10}"
        f"{'cpu ms/req proxy/champion/shadow':>34}  target",
    ]
    for s in result["summary"]:
        for which in STATES:
            if f"{which}_p50_ms" not in s:
                continue
            head = (
                f"{s['concurrency']:>4}  {which:<14}{s[f'{which}_p50_ms']:>9.2f}"
                f"{s[f'{which}_p99_ms']:>9.2f}{s[f'{which}_rps']:>7.0f}"
            )
            cpu = "/".join(f"{s[f'{which}_cpu_ms_{r}']:.2f}" for r in ROLES)
            if which not in SHADOWS or f"{which}_p50_cost" not in s:
                lines.append(f"{head}{'':>62}{cpu:>34}")
                continue
            c = s[f"{which}_copies"]
            made = c["mirrored"] + c["dropped"]
            answered = "n/a" if c["answered_share"] is None else f"{c['answered_share']:.0%}"
            lines.append(
                f"{head}{s[f'{which}_p50_cost']:>+10.1%}{s[f'{which}_p99_cost']:>+10.1%}"
                f"{made:>8}{c['dropped'] + c['mirror_stale']:>9}{c['mirror_timeouts']:>6}"
                f"{answered:>10}{cpu:>34}"
                f"  {'ok' if s[f'{which}_meets_target'] else 'MISSED'} (<= {TARGET_P50_COST:.0%})"
            )
    if result.get("skipped_states"):
        lines.append(f"skipped (priority could not be set): {result['skipped_states']}")
    return "\n".join(lines)
