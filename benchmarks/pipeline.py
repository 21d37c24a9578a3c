"""``recops bench pipeline``: the retrain flow's wall time per stage, and the orchestration share.

Runs the real flow once (a temporary Prefect server unless ``PREFECT_API_URL`` is set,
started early as ``recops run`` does: :mod:`flows.temporary_server`) and reads each task
run's duration back from the Prefect API. "Work" is training and evaluation (the
``train-challenger`` and ``evaluation-gate`` tasks); everything else — validation,
versioning, features, registry, bento build and deploy, and Prefect itself — is reported
as the overhead share, as the issue asks. The influence report (a model-level
explanation, :data:`MODEL_TASKS`) is model computation, not platform: its share is
printed on its own line so either reading can be taken.

Wall time counts from the process's start, so the command's imports and the Prefect
server's start-up are in the total (row ``(start-up: process + imports)``), not only
what follows the flow call.

Beside wall time each stage gets its CPU seconds: the CPU time of this process and its
child processes (the temporary Prefect server; a deploy's processes while they are its
children) is sampled four times a second and read at each task's start and end (the
tasks run one after another). On a shared machine the CPU columns are what compare
across runs; wall time says what a user waited.

The **library floor** is what no change to recops can cut: after the run, a fresh
interpreter imports every third-party package the run loaded (read from
``sys.modules``: those whose files are under the environment's site-packages) and
reports its own CPU seconds. Its share of the run's CPU is the overhead left before
recops does any work of its own; the deploy's new server process and the Prefect server
come on top of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.common import print_table, write_report
from components.config import RecopsConfig

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun

    from flows.temporary_server import TemporaryServer

WORK_TASKS = ("train-challenger", "evaluation-gate")
#: model computation that is neither training nor the gate's evaluation
MODEL_TASKS = ("influence-report",)


def _started_at(run: TaskRun) -> datetime:
    """When a task run started (expected start for one that never did; epoch if neither)."""
    return run.start_time or run.expected_start_time or datetime.min.replace(tzinfo=timezone.utc)


class CpuTrace(threading.Thread):
    """(wall clock, CPU seconds of this process and its children so far), sampled."""

    def __init__(self, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = [(time.time(), self.cpu())]
        self._stop_event = threading.Event()

    def cpu(self) -> float:
        """CPU seconds so far: this process, its reaped children, its live children."""
        import psutil

        own = self.process.cpu_times()
        total = own.user + own.system + own.children_user + own.children_system
        for child in self.process.children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.Error:  # exited between listing and reading
                continue
            total += times.user + times.system
        return total

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.samples.append((time.time(), self.cpu()))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.samples.append((time.time(), self.cpu()))

    def at(self, moment: float) -> float:
        """CPU seconds at wall-clock ``moment`` (interpolated between samples)."""
        walls, cpus = zip(*self.samples, strict=True)
        return float(np.interp(moment, walls, cpus))


def _task_durations(flow_run_id: Any) -> list[tuple[str, float, float, float]]:
    """(task name, seconds, start, end as unix times) of a flow run's tasks, in order."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    ordered = sorted(runs, key=_started_at)
    return [
        (
            r.name.rsplit("-", 1)[0],
            (r.end_time - r.start_time).total_seconds(),
            r.start_time.timestamp(),
            r.end_time.timestamp(),
        )
        for r in ordered
        if r.start_time and r.end_time
    ]


def process_age_s() -> float:
    """Seconds since this process started (its imports included)."""
    import psutil

    return time.time() - psutil.Process().create_time()


def third_party_packages() -> list[str]:
    """The top-level packages this process has imported from the environment's
    site-packages (not the standard library, not recops's own packages), sorted."""
    roots = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    found: set[str] = set()
    for name, module in list(sys.modules.items()):
        top = name.partition(".")[0]
        where = getattr(module, "__file__", None)
        if "." in name or top in found or not where:
            continue
        if any(root in Path(where).resolve().parents for root in roots):
            found.add(top)
    return sorted(found)


_IMPORT_PROBE = """
import importlib, json, resource, sys
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu_seconds": usage.ru_utime + usage.ru_stime, "failed": failed}))
"""


def import_cpu_seconds(packages: list[str]) -> tuple[float, list[str]]:
    """CPU seconds a fresh interpreter spends starting and importing ``packages`` (what
    any process that uses them pays), and the ones it could not import alone."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, *packages],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    return float(probe["cpu_seconds"]), list(probe["failed"])


def _share(seconds: float, total: float) -> tuple[float, float]:
    return seconds, seconds / total


def run_pipeline_benchmark(
    cfg: RecopsConfig,
    data_path: Path | None,
    data_format: str,
    json_out: Path | None,
    server: TemporaryServer | None = None,
) -> dict[str, Any]:
    """Run the retrain flow once and report per-stage wall time and the overhead share
    (over the whole process: its start-up and imports count)."""
    from flows.retrain import retrain_flow
    from flows.temporary_server import flow_api

    trace = CpuTrace()
    startup, startup_cpu = process_age_s(), trace.samples[0][1]
    trace.start()
    start = time.perf_counter()
    with flow_api(server) as used:
        state = retrain_flow(
            config=cfg.model_dump(mode="json"),
            data_path=str(data_path) if data_path else None,
            data_format=data_format,
            actor="bench",
            return_state=True,
        )
        flow_total = time.perf_counter() - start
        trace.stop()
        tasks = _task_durations(state.state_details.flow_run_id)
    result = state.result()
    stages = [
        (name, seconds, trace.at(end) - trace.at(begin)) for name, seconds, begin, end in tasks
    ]
    total = startup + flow_total
    total_cpu = trace.samples[-1][1]
    work = sum(seconds for name, seconds, _ in stages if name in WORK_TASKS)
    work_cpu = sum(cpu for name, _, cpu in stages if name in WORK_TASKS)
    model = sum(seconds for name, seconds, _ in stages if name in MODEL_TASKS)
    model_cpu = sum(cpu for name, _, cpu in stages if name in MODEL_TASKS)
    untracked = flow_total - sum(s for _, s, _ in stages)
    untracked_cpu = total_cpu - startup_cpu - sum(c for _, _, c in stages)
    rows = [("(start-up: process + imports)", *_share(startup, total), startup_cpu)]
    rows += [(name, *_share(seconds, total), cpu) for name, seconds, cpu in stages]
    rows.append(("(prefect + untracked)", *_share(untracked, total), untracked_cpu))
    print_table(
        f"bench pipeline: {data_path or 'synthetic'} ({result.record.model_name}, {result.outcome.status})",
        ["stage", "seconds", "share", "CPU s"],
        rows + [("total", total, 1.0, total_cpu)],
    )
    overhead = (total - work) / total
    overhead_cpu = (total_cpu - work_cpu) / total_cpu
    server_wait = used.waited_s if used is not None else None
    print(
        f"orchestration + platform overhead (all but training and evaluation): {overhead:.1%} of {total:.1f} s"
        f" wall; {overhead_cpu:.1%} of {total_cpu:.1f} CPU s"
    )
    print(
        f"  without the influence report (model work): {(total - work - model) / total:.1%} "
        f"wall; {(total_cpu - work_cpu - model_cpu) / total_cpu:.1%} CPU"
    )
    packages = third_party_packages()
    floor_cpu, unimportable = import_cpu_seconds(packages)
    print(
        f"library floor: a fresh interpreter importing the {len(packages)} third-party "
        f"packages this run loaded costs {floor_cpu:.1f} CPU s = {floor_cpu / total_cpu:.1%} "
        f"of the run's CPU, before any recops work (the deploy's server process and the "
        f"Prefect server come on top)"
        + (f"; not importable alone: {', '.join(unimportable)}" if unimportable else "")
    )
    print(
        f"  flow call only (as measured before start-up counted): "
        f"{(flow_total - work) / flow_total:.1%} of {flow_total:.1f} s; "
        f"waited for the early Prefect server: "
        + ("n/a (not started early)" if server_wait is None else f"{server_wait:.1f} s")
    )
    return write_report(
        json_out,
        "pipeline",
        {
            "data": str(data_path) if data_path else "synthetic",
            "format": data_format,
            "model": result.record.model_name,
            "outcome": result.outcome.status,
            "total_seconds": total,
            "startup_seconds": startup,
            "flow_seconds": flow_total,
            "work_seconds": work,
            "model_seconds": model,
            "server_wait_seconds": server_wait,
            "overhead_share": overhead,
            "overhead_share_without_model": (total - work - model) / total,
            "total_cpu_seconds": total_cpu,
            "startup_cpu_seconds": startup_cpu,
            "work_cpu_seconds": work_cpu,
            "model_cpu_seconds": model_cpu,
            "overhead_share_cpu": overhead_cpu,
            "overhead_share_cpu_without_model": (total_cpu - work_cpu - model_cpu) / total_cpu,
            "library_packages": packages,
            "library_floor_cpu_seconds": floor_cpu,
            "library_floor_share_cpu": floor_cpu / total_cpu,
            "load_average": list(os.getloadavg()),
            "stages": [{"stage": n, "seconds": s, "cpu_seconds": c} for n, s, c in stages],
        },
    )
