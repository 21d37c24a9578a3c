"""``recops bench serving``: the bento vs BentoML's own ceiling vs the bare model call.

Rows per concurrency level (1, 8, 32 by default), the HTTP targets measured back to back
at each level so a shared machine's drift hits both alike:

* ``bento``      - ``POST /recommend`` (explicit history, k=10) through the public port of
  the local deployment (proxy + BentoML + our routes + micro-batcher + model);
* ``backend``    - the same request on the bento's own port, past the proxy: the
  difference to ``bento`` is the proxy hop;
* ``echo``       - the same body against ``services.echo`` (a trivial BentoML service,
  started for the run from the same environment): what BentoML itself costs here;
* ``in-process`` - ``Engine.plan`` + ``Engine.recommend_local`` on the same bundle in this
  process, ``concurrency`` requests as one batch (the batching ideal, no HTTP).

Each target first gets :data:`WARM_UP_S` of unmeasured load, so one-off work (a
fixed-shape ONNX session built for the request's shape, lazy imports) is not counted.
The summary gives, per level, bento/echo throughput and p99 ratios against the targets
(>= 0.8 and <= 2.0). ``cpu us`` is the server processes' CPU time per request (proxy +
bento for ``bento``, bento for ``backend``, echo for ``echo``; this process for
``in-process``): where the work goes, whatever the machine's load. Load comes from ``wrk`` (one thread, keep-alive) when it is on PATH,
else from ``benchmarks.loadgen`` (a Python client, slower than the servers it measures:
the result says so). ``--items N`` measures a self-contained deployment of an untrained
SASRec over an ``N``-item catalogue in a scratch workspace (e.g. 40 and 12101, Beauty's
size) instead of the workspace's running deployment.

``--kill-backend-after S`` adds a fault run: load on the public port at the highest level
while the backend's BentoML arbiter is ``SIGKILL``ed after ``S`` seconds. The supervisor
starts the bento again and the proxy holds new connections until it answers, so what the
kill costs should be the requests in flight at that moment (at most the concurrency);
the row says how many failed, how many timed out and when the public port answered again.

``wait us`` is the time the server processes spent ready but waiting for a CPU (the
kernel's run-queue delay, ``/proc/<pid>/task/*/schedstat``) per request: what the
machine, not the server, added to the requests' latency. On a quiet machine it is a few
us; on a shared one it shows which rows (and which p99s) the other processes decided.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import httpx

from components.config import RecopsConfig
from components.deploy.config import LocalDeployConfig, ServeConfig
from components.errors import RecopsError
from components.models.compiled import ScorerKind
from components.workspace import Workspace

log = logging.getLogger(__name__)

BODY_K = 10
#: seconds of unmeasured load on each target before the measured levels
WARM_UP_S = 2.0
TARGET_RPS_RATIO = 0.8
TARGET_P99_RATIO = 2.0
#: a request's time limit in the fault run: one held by the proxy through a backend
#: restart (a few seconds) is slow, not lost
KILL_REQUEST_TIMEOUT_S = 30
WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("RECOPS_BENCH_BODY")
"""


# --- load generation --------------------------------------------------------------------
def load(
    url: str,
    concurrency: int,
    duration: float,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout_s: int | None = None,
) -> dict[str, Any]:
    """One closed-loop run against ``url``: requests, errors, req/s, p50/p90/p99 ms, tool
    (``timeout_s``: a request's time limit; wrk's own 2 s, the Python client's 30 s)."""
    if shutil.which("wrk"):
        return _wrk(url, concurrency, duration, body, headers, timeout_s)
    return _python_loadgen(url, concurrency, duration, body, headers)


def _wrk(
    url: str,
    concurrency: int,
    duration: float,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout_s: int | None = None,
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT)
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:.0f}s", "--latency", "-s", fh.name]
    if timeout_s is not None:
        cmd.append(f"--timeout={timeout_s}s")
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    env = {**os.environ, "RECOPS_BENCH_BODY": json.dumps(body)}
    try:
        done = subprocess.run(
            [*cmd, url], capture_output=True, text=True, timeout=duration + 60, env=env
        )
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        raise RecopsError(f"wrk failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return {"tool": "wrk", "concurrency": concurrency, **parse_wrk(done.stdout)}


def parse_wrk(text: str) -> dict[str, Any]:
    """Figures from ``wrk --latency`` output (errors = non-2xx/3xx + socket errors)."""

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return round(float(m.group(1)) * scale, 2)

    total = re.search(r"(\d+) requests in", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(int(g) for g in sock.groups()) if sock else 0
    return {
        "requests": int(total.group(1)) if total else 0,
        "errors": errors,
        # of which: refused with a status (e.g. 503 + Retry-After when shed) and timed
        # out (no answer within wrk's 2 s) - overload should be the former, never the latter
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "timeouts": int(sock.group(4)) if sock else 0,
        "rps": round(float(rps.group(1)), 1) if rps else 0.0,
        "p50_ms": ms("50"),
        "p90_ms": ms("90"),
        "p99_ms": ms("99"),
    }


def _python_loadgen(
    url: str, concurrency: int, duration: float, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    log.warning("wrk not found on PATH: using the Python load generator (it saturates first)")
    cmd = [sys.executable, "-m", "benchmarks.loadgen", "--url", url]
    cmd += ["--concurrency", str(concurrency), "--duration", str(duration)]
    cmd += ["--body", json.dumps(body)]
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 120, cwd=str(_repo_root())
    )
    if done.returncode != 0:
        raise RecopsError(f"load generator failed: {done.stderr.strip().splitlines()[-1:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["p90_ms"] = row.pop("p95_ms", float("nan"))  # the Python client reports p95
    return {"tool": "python", **row}


def _repo_root() -> Path:
    from components.deploy.bento import REPO_ROOT

    return REPO_ROOT


# --- targets ----------------------------------------------------------------------------
def _start_echo(workspace: Workspace, access_log: bool) -> Any:
    """The echo service, with BentoML's access log as the measured deployment has it."""
    from components.deploy.local import _child_env, _spawn, wait_ready
    from components.net import free_port
    from services.echo import ACCESS_LOG_ENV

    port = free_port()
    log_path = workspace.deploy_dir / "logs" / "bench-echo.log"
    cmd = [sys.executable, "-m", "bentoml", "serve", "services.echo:Echo"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**_child_env(workspace), ACCESS_LOG_ENV: "1" if access_log else "0"}
    info = _spawn(cmd, log_path, port, env, _repo_root(), "bench")
    wait_ready(info, "127.0.0.1", 120.0)
    return info


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) used so far by ``pids`` and all their descendants.

    Per request (``server_cpu_us``) it says where a request's work goes - proxy, BentoML,
    our code - independently of how busy the machine is, unlike latency."""
    import psutil

    total = 0.0
    for proc in process_trees(pids):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        # children_*: descendants that exited and were reaped (a restarted worker)
        total += times.user + times.system + times.children_user + times.children_system
    return total


def process_trees(pids: list[int]) -> list[Any]:
    """The live processes of ``pids`` and all their descendants (psutil.Process; a pid
    that has gone is skipped)."""
    import psutil

    procs: list[Any] = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return procs


def run_queue_seconds(pids: list[int]) -> float:
    """Time ``pids`` and their descendants' threads spent runnable but waiting for a CPU
    (the second field of ``/proc/<pid>/task/<tid>/schedstat``; 0.0 where it is not
    readable): the machine's share of their latency."""
    total_ns = 0
    for proc in process_trees(pids):
        for stat in Path(f"/proc/{proc.pid}/task").glob("*/schedstat"):
            try:
                total_ns += int(stat.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total_ns / 1e9


def _in_process(
    workspace: Workspace,
    version: str,
    body: dict[str, Any],
    levels: list[int],
    duration: float,
    device: str,
    cpu_threads: int = 0,
    scorer: str = "onnx",
) -> list[dict[str, Any]]:
    import numpy as np
    import torch

    if cpu_threads and device == "cpu":  # as the service does on CPU (serve.cpu_threads)
        torch.set_num_threads(cpu_threads)
    from components.registry.store import ModelRegistry
    from services.engine import Engine

    bundle = ModelRegistry(workspace).load_bundle(version, device)
    # the scorer the deployment ended with (serve.scorer, after its fallbacks)
    engine = Engine(bundle, version, torch.device(device), scorer=cast(ScorerKind, scorer))
    rows = []
    for level in levels:

        def call(n: int = level) -> None:
            plans = [engine.plan(body["history"], BODY_K, True, []) for _ in range(n)]
            engine.recommend_local(plans)

        call()  # warm-up
        times: list[float] = []
        until = time.perf_counter() + duration
        cpu_before = time.process_time()
        while time.perf_counter() < until:
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        cpu_us = (time.process_time() - cpu_before) / (len(times) * level) * 1e6
        ms = np.asarray(times) * 1000.0
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        rows.append(
            {
                "target": "in-process",
                "tool": "python",
                "concurrency": level,
                "requests": len(ms) * level,
                "errors": 0,
                "rps": round(len(ms) * level / float(ms.sum() / 1000.0), 1),
                "p50_ms": round(float(p50), 2),
                "p90_ms": round(float(p90), 2),
                "p99_ms": round(float(p99), 2),
                "server_cpu_us": round(cpu_us),
            }
        )
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level: bento/echo throughput and p99 ratios, and whether both meet the targets."""
    out = []
    for level in sorted({r["concurrency"] for r in rows}):
        by = {r["target"]: r for r in rows if r["concurrency"] == level}
        if "bento" not in by or "echo" not in by or not by["echo"]["rps"]:
            continue
        bento, echo = by["bento"], by["echo"]
        rps_ratio = round(bento["rps"] / echo["rps"], 2)
        p99_ratio = round(bento["p99_ms"] / echo["p99_ms"], 2) if echo["p99_ms"] else None
        out.append(
            {
                "concurrency": level,
                "rps_ratio": rps_ratio,
                "p99_ratio": p99_ratio,
                "errors": bento["errors"],
                "meets_target": rps_ratio >= TARGET_RPS_RATIO
                and p99_ratio is not None
                and p99_ratio <= TARGET_P99_RATIO
                and bento["errors"] == 0,
            }
        )
    return out


# --- the benchmark ----------------------------------------------------------------------
def request_body(meta: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's request: the deployment's own sample history (``/metadata``), k=10."""
    return {"history": list(meta.get("sample_items") or []), "k": BODY_K}


def run_serving_benchmark(
    workspace: Workspace,
    cfg: RecopsConfig,
    levels: list[int],
    duration_s: float,
    device: str = "cpu",
) -> dict[str, Any]:
    """Measure the running local deployment of ``workspace`` (see module doc)."""
    from components.deploy.local import auth_headers, read_state, stop_process

    state = read_state(workspace)
    if state is None or state.version is None or not (state.proxy and state.proxy.alive()):
        raise RecopsError("no local deployment is running", hint="run `recops serve start`")
    base = f"http://{state.host}:{state.public_port}"
    headers = auth_headers(cfg.serve)
    meta = httpx.get(f"{base}/metadata", headers=headers, timeout=10).json()
    served_on = str(meta.get("device", "cpu")).split(":")[0]
    if served_on != device:
        raise RecopsError(
            f"the deployment serves on {served_on}, not {device}",
            hint=f"deploy with --set serve.device={device}",
        )
    body = request_body(meta)
    rows: list[dict[str, Any]] = []
    # a deployment older than serve.access_log logs every request: so does echo then
    echo = _start_echo(workspace, bool(meta.get("access_log", True)))
    try:
        backend_pids = [state.backend.pid] if state.backend is not None else []
        urls = {"bento": (f"{base}/recommend", headers, [state.proxy.pid, *backend_pids])}
        if state.backend is not None:
            url = f"http://{state.host}:{state.backend.port}/recommend"
            urls["backend"] = (url, headers, backend_pids)
        urls["echo"] = (f"http://127.0.0.1:{echo.port}/recommend", {}, [echo.pid])
        for url, with_headers, _ in urls.values():  # unmeasured: one-off work (a fixed-shape
            # ONNX session for this request's shape, lazy imports, caches) is not counted
            load(url, 1, WARM_UP_S, body, with_headers)
        for level in levels:  # back to back per level: drift hits all targets alike
            for target, (url, with_headers, pids) in urls.items():
                before, waited = cpu_seconds(pids), run_queue_seconds(pids)
                row = load(url, level, duration_s, body, with_headers)
                spent = cpu_seconds(pids) - before
                waited = run_queue_seconds(pids) - waited
                row["server_cpu_us"] = round(spent / max(1, row["requests"]) * 1e6)
                row["server_wait_us"] = round(waited / max(1, row["requests"]) * 1e6)
                rows.append({"target": target, **row})
    finally:
        stop_process(echo)
    rows += _in_process(
        workspace,
        state.version,
        body,
        levels,
        duration_s,
        device,
        cfg.serve.cpu_threads,
        meta.get("scorer", {}).get("kind", "eager"),
    )
    if any(r["tool"] == "python" and r["target"] != "in-process" for r in rows):
        log.warning("measured with the Python load generator: install wrk for real figures")
    return {
        "benchmark": "serving",
        "model_version": state.version,
        "model_name": meta.get("model_name"),
        "n_items": meta.get("n_items"),
        "scorer": meta.get("scorer"),
        "request": body,
        "duration_s_per_level": duration_s,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "device": meta.get("device"),
        },
        "rows": rows,
        "summary": summarise(rows),
    }


def _answering_after(url: str, headers: dict[str, str], body: dict[str, Any]) -> float:
    """Seconds until ``POST url`` answers 200 (the proxy holds a connection while the
    backend restarts; a refusal or error is retried every 50 ms, for at most 300 s)."""
    started = time.perf_counter()
    while time.perf_counter() - started < 300:
        try:
            if httpx.post(url, json=body, headers=headers, timeout=60).status_code == 200:
                return round(time.perf_counter() - started, 2)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RecopsError(f"{url} did not answer within 300 s of the backend kill")


def measure_backend_kill(
    workspace: Workspace, cfg: RecopsConfig, concurrency: int, duration_s: float, after_s: float
) -> dict[str, Any]:
    """Load on the running deployment's public port; after ``after_s`` seconds its
    backend's arbiter is ``SIGKILL``ed (see module doc). Returns the load row plus
    ``answering_again_s`` (kill -> first 200 on the public port: BentoML's orphaned worker
    may answer until the supervisor stops it) and ``restarted_s`` (kill -> the supervisor
    recorded the restarted backend, ready and switched to)."""
    from components.deploy.local import auth_headers, read_state

    state = read_state(workspace)
    if state is None or state.backend is None or not state.backend.alive():
        raise RecopsError("no local deployment with a live backend is running")
    if after_s >= duration_s:
        raise RecopsError(f"--kill-backend-after {after_s} must be below the {duration_s} s run")
    base = f"http://{state.host}:{state.public_port}"
    url = f"{base}/recommend"
    headers = auth_headers(cfg.serve)
    body = request_body(httpx.get(f"{base}/metadata", headers=headers, timeout=10).json())
    row: dict[str, Any] = {}

    def run_load() -> None:
        row.update(load(url, concurrency, duration_s, body, headers, KILL_REQUEST_TIMEOUT_S))

    loader = threading.Thread(target=run_load, name="kill-load")
    loader.start()
    time.sleep(after_s)  # the scenario's schedule, not a synchronisation
    os.kill(state.backend.pid, signal.SIGKILL)
    killed = time.perf_counter()
    again = _answering_after(url, headers, body)
    while (now := read_state(workspace)) is None or now.restarts <= state.restarts:
        if time.perf_counter() - killed > 300:
            raise RecopsError("the supervisor did not restart the killed backend in 300 s")
        time.sleep(0.05)
    restarted_s = round(time.perf_counter() - killed, 2)
    loader.join()
    return {
        "target": "kill-backend",
        "kill_after_s": after_s,
        "answering_again_s": again,
        "restarted_s": restarted_s,
        **row,
    }


def run_self_contained(
    n_items: int,
    levels: list[int],
    duration_s: float,
    device: str = "cpu",
    seed: int = 0,
    serve: dict[str, Any] | None = None,
    kill_backend_after_s: float | None = None,
) -> dict[str, Any]:
    """Deploy an untrained SASRec over ``n_items`` items in a scratch workspace (``serve``:
    settings of its serve config, e.g. the scorer), measure it like
    :func:`run_serving_benchmark`, stop it and delete the workspace.

    A process whose BentoML already serves another store (an earlier ``--items`` size)
    would build this bento in a child process, which a real deploy does not pay: the
    whole measurement then runs in a fresh process instead, so every size's switch-over
    is timed alike."""
    if "bentoml" in sys.modules:
        args = [n_items, levels, duration_s, device, seed, serve, kill_backend_after_s]
        return _in_fresh_process(args)
    from components.config import RecopsConfig
    from components.deploy.local import deploy_version, stop_local
    from components.features.config import FeaturesConfig
    from components.net import free_port

    root = Path(tempfile.mkdtemp(prefix="recops-bench-serving-"))
    workspace = Workspace.at(root).activate()
    try:
        version = _register_untrained(workspace, n_items, seed)
        serve_cfg = ServeConfig.model_validate(
            {**(serve or {}), "port": free_port(), "device": device}
        )
        deploy_cfg = LocalDeployConfig(readiness_timeout_s=300, switch_drain_s=0.0)
        features_cfg = FeaturesConfig(enabled=False)
        started = time.perf_counter()
        deployed = deploy_version(workspace, version, serve_cfg, deploy_cfg, features_cfg)
        deploy_s = round(time.perf_counter() - started, 1)
        # the same model again under a new version: what a retrain's promotion costs
        # (the running backend loads it in place: components/deploy/swap.py)
        again = _register_untrained(workspace, n_items, seed + 1)
        swapped = deploy_version(workspace, again, serve_cfg, deploy_cfg, features_cfg)
        cfg = RecopsConfig().model_copy(update={"serve": serve_cfg})
        result = run_serving_benchmark(workspace, cfg, levels, duration_s, device)
        result["deploy_s"] = deploy_s
        result["switch_over"] = deployed.timings
        result["switch_over_redeploy"] = {"mode": swapped.mode, **swapped.timings}
        result["model"] = f"untrained sasrec (configs/models/sasrec.yaml sizes), {n_items} items"
        if kill_backend_after_s is not None:
            result["backend_kill"] = measure_backend_kill(
                workspace, cfg, max(levels), duration_s, kill_backend_after_s
            )
        return result
    finally:
        stop_local(workspace)
        shutil.rmtree(root, ignore_errors=True)


def _in_fresh_process(args: list[Any]) -> dict[str, Any]:
    """:func:`run_self_contained` with ``args`` in a new interpreter (see its doc)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(_repo_root()),
        timeout=3600,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RecopsError(f"the serving benchmark for {args[0]} items failed (see above)")
    return cast(dict[str, Any], json.loads(lines[-1]))


def main() -> None:
    """Child-process entry (:func:`_in_fresh_process`): print the result as JSON."""
    print(json.dumps(run_self_contained(*json.loads(sys.argv[1]))))


def _register_untrained(workspace: Workspace, n_items: int, seed: int) -> str:
    """An untrained SASRec bundle over ``n_items`` synthetic items, registered."""
    import numpy as np
    import torch

    from components.data.sequences import Vocabulary
    from components.models.bundle import ModelBundle, build_model
    from components.records import RunRecord
    from components.registry.store import ModelRegistry

    torch.manual_seed(seed)
    params = {"hidden_size": 64, "num_layers": 2, "num_heads": 2}
    max_len = 50
    vocab = Vocabulary(users=("u0",), items=tuple(f"i{j}" for j in range(n_items)))
    model = build_model("sasrec", params, n_items, 1, max_len)
    rng = np.random.default_rng(seed)
    popularity = np.concatenate([[0.0], rng.zipf(1.3, n_items).astype(np.float64)])
    bundle = ModelBundle(model, vocab, "sasrec", params, max_len, popularity)
    record = RunRecord(
        run_id=f"bench-{n_items}-{seed}",
        model_name="sasrec",
        config={},
        config_hash="bench",
        code_rev="bench",
        data_version=None,
        metrics_test={},
    )
    return ModelRegistry(workspace).register(bundle, record).version


def render_table(result: dict[str, Any]) -> str:
    """Readable table of the rows, then the bento/echo ratios per level."""
    head = (
        f"{'target':<11} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6} {'cpu us':>7} {'wait us':>7} {'tool':>6}"
    )
    machine = result["machine"]
    lines = [
        f"serving benchmark: model {result['model_version']} ({result['model_name']}, "
        f"{result['n_items']} items), {result['duration_s_per_level']}s per level, "
        f"{machine['cpus']} CPUs (load {machine['load_avg_1m']}), device {machine['device']}, "
        f"scorer {(result.get('scorer') or {}).get('kind', '-')}",
        head,
        "-" * len(head),
    ]
    for row in sorted(result["rows"], key=lambda r: (r["concurrency"], r["target"])):
        lines.append(
            f"{row['target']:<11} {row['concurrency']:>4} {row['rps']:>8} {row['p50_ms']:>8} "
            f"{row['p90_ms']:>8} {row['p99_ms']:>8} {row['errors']:>6} "
            f"{row.get('server_cpu_us', '-')!s:>7} {row.get('server_wait_us', '-')!s:>7} {row['tool']:>6}"
        )
    if "switch_over" in result:
        lines.append(f"first deploy (build -> answering): {result['switch_over']}")
    if "switch_over_redeploy" in result:
        lines.append(f"redeploy, new version: {result['switch_over_redeploy']}")
    if "backend_kill" in result:
        kill = result["backend_kill"]
        lines.append(
            f"backend SIGKILLed {kill['kill_after_s']} s into c={kill['concurrency']} load: "
            f"restarted after {kill['restarted_s']} s, {kill['requests']} "
            f"requests, {kill['errors']} errors ({kill['non_2xx']} non-2xx, "
            f"{kill.get('timeouts', 0)} timeouts), p99 {kill['p99_ms']} ms"
        )
    lines.append("")
    lines.append(f"bento/echo (targets: req/s >= {TARGET_RPS_RATIO}, p99 <= {TARGET_P99_RATIO}x)")
    for s in result["summary"]:
        verdict = "meets" if s["meets_target"] else "misses"
        lines.append(
            f"  c={s['concurrency']:<3} req/s ratio {s['rps_ratio']:<5} p99 ratio "
            f"{s['p99_ratio']!s:<5} errors {s['errors']}  -> {verdict} the target"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
