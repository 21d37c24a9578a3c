"""``recops bench serving``: the deployed bento vs BentoML's ceiling vs the bare model call.

Three rows per concurrency level (1, 8, 32 by default):

* ``bento``     - ``POST /recommend`` (explicit history, k=10) through the public port of
  the running local deployment (proxy + BentoML + adaptive batching + model);
* ``echo``      - the same body against ``services.echo`` (a trivial BentoML service,
  started for the run on a free port): what BentoML itself costs on this machine;
* ``in-process``- ``Engine.plan`` + ``Engine.recommend_local`` on the same bundle in this
  process, with ``concurrency`` requests as one batch (the batching ideal, no HTTP).

The HTTP load comes from ``benchmarks.loadgen`` in a separate process (closed loop, one
asyncio client, keep-alive). On a small shared machine client and server compete for
the same cores: read the numbers as relative, and report the machine with them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import httpx

from components.config import RecopsConfig
from components.errors import RecopsError
from components.workspace import Workspace

BODY_K = 10


def _loadgen(
    url: str, concurrency: int, duration: float, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
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
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 120, cwd=str(_repo_root())
    )
    if done.returncode != 0:
        raise RecopsError(f"load generator failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _repo_root():
    from components.deploy.bento import REPO_ROOT

    return REPO_ROOT


def _start_echo(workspace: Workspace):
    from components.deploy.local import ProcessInfo, _child_env, _spawn, wait_ready
    from components.net import free_port

    port = free_port()
    log_path = workspace.deploy_dir / "logs" / "bench-echo.log"
    cmd = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "services.echo:Echo",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    info: ProcessInfo = _spawn(cmd, log_path, port, _child_env(workspace), _repo_root())
    wait_ready(info, "127.0.0.1", 120.0)
    return info


def _in_process(
    workspace: Workspace,
    version: str,
    body: dict[str, Any],
    levels: list[int],
    duration: float,
    cpu_threads: int = 0,
) -> list[dict[str, Any]]:
    import numpy as np
    import torch

    if cpu_threads:  # as the service does on CPU (serve.cpu_threads)
        torch.set_num_threads(cpu_threads)
    from components.registry.store import ModelRegistry
    from services.engine import Engine

    bundle = ModelRegistry(workspace).load_bundle(version, "cpu")
    engine = Engine(bundle, version, torch.device("cpu"))
    rows = []
    for level in levels:

        def call(n: int = level) -> None:
            plans = [engine.plan(body["history"], BODY_K, True, []) for _ in range(n)]
            engine.recommend_local(plans)

        call()  # warm-up
        times: list[float] = []
        until = time.perf_counter() + duration
        while time.perf_counter() < until:
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        ms = np.asarray(times) * 1000.0
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        rows.append(
            {
                "target": "in-process",
                "concurrency": level,
                "requests": len(ms) * level,
                "errors": 0,
                "rps": round(len(ms) * level / float(ms.sum() / 1000.0), 1),
                "p50_ms": round(float(p50), 2),
                "p95_ms": round(float(p95), 2),
                "p99_ms": round(float(p99), 2),
            }
        )
    return rows


def run_serving_benchmark(
    workspace: Workspace, cfg: RecopsConfig, levels: list[int], duration_s: float
) -> dict[str, Any]:
    """Run the three targets at each level; the running deployment is required."""
    from components.deploy.local import auth_headers, read_state, stop_process

    state = read_state(workspace)
    if state is None or state.version is None or not (state.proxy and state.proxy.alive()):
        raise RecopsError("no local deployment is running", hint="run `recops serve start`")
    base = f"http://{state.host}:{state.public_port}"
    headers = auth_headers(cfg.serve)
    meta = httpx.get(f"{base}/metadata", headers=headers, timeout=10).json()
    history = list(meta.get("sample_items") or [])
    body = {"history": history, "k": BODY_K}
    rows: list[dict[str, Any]] = []
    for level in levels:
        rows.append(
            {"target": "bento", **_loadgen(f"{base}/recommend", level, duration_s, body, headers)}
        )
    echo = _start_echo(workspace)
    try:
        for level in levels:
            rows.append(
                {
                    "target": "echo",
                    **_loadgen(
                        f"http://127.0.0.1:{echo.port}/recommend", level, duration_s, body, {}
                    ),
                }
            )
    finally:
        stop_process(echo)
    rows += _in_process(workspace, state.version, body, levels, duration_s, cfg.serve.cpu_threads)
    return {
        "benchmark": "serving",
        "model_version": state.version,
        "model_name": meta.get("model_name"),
        "n_items": meta.get("n_items"),
        "request": body,
        "duration_s_per_level": duration_s,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "device": meta.get("device"),
        },
        "rows": rows,
    }


def render_table(result: dict[str, Any]) -> str:
    """Readable table of the rows (one line per target and concurrency)."""
    head = f"{'target':<11} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}"
    lines = [
        f"serving benchmark: model {result['model_version']} ({result['model_name']}, "
        f"{result['n_items']} items), {result['duration_s_per_level']}s per level, "
        f"{result['machine']['cpus']} CPUs, device {result['machine']['device']}",
        head,
        "-" * len(head),
    ]
    for row in sorted(result["rows"], key=lambda r: (r["concurrency"], r["target"])):
        lines.append(
            f"{row['target']:<11} {row['concurrency']:>4} {row['rps']:>8} "
            f"{row['p50_ms']:>8} {row['p95_ms']:>8} {row['p99_ms']:>8} {row['errors']:>6}"
        )
    return "\n".join(lines)
