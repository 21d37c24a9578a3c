"""``recops bench pipeline``: the retrain flow's wall time per stage, and the orchestration share.

Runs the real flow once (ephemeral Prefect unless ``PREFECT_API_URL`` is set) and reads
each task run's duration back from the Prefect API. "Work" is training and evaluation
(the ``train-challenger`` and ``evaluation-gate`` tasks); everything else — validation,
versioning, features, registry, bento build and deploy, and Prefect itself — is reported
as the overhead share, as the issue asks.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import print_table, write_report
from components.config import RecopsConfig

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun

WORK_TASKS = ("train-challenger", "evaluation-gate")


def _started_at(run: TaskRun) -> datetime:
    """When a task run started (expected start for one that never did; epoch if neither)."""
    return run.start_time or run.expected_start_time or datetime.min.replace(tzinfo=timezone.utc)


def _task_durations(flow_run_id: Any) -> list[tuple[str, float]]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    ordered = sorted(runs, key=_started_at)
    return [
        (r.name.rsplit("-", 1)[0], (r.end_time - r.start_time).total_seconds())
        for r in ordered
        if r.start_time and r.end_time
    ]


def run_pipeline_benchmark(
    cfg: RecopsConfig, data_path: Path | None, data_format: str, json_out: Path | None
) -> dict[str, Any]:
    """Run the retrain flow once and report per-stage wall time and the overhead share."""
    from flows.retrain import retrain_flow

    start = time.perf_counter()
    state = retrain_flow(
        config=cfg.model_dump(mode="json"),
        data_path=str(data_path) if data_path else None,
        data_format=data_format,
        actor="bench",
        return_state=True,
    )
    total = time.perf_counter() - start
    result = state.result()
    stages = _task_durations(state.state_details.flow_run_id)
    work = sum(seconds for name, seconds in stages if name in WORK_TASKS)
    rows = [(name, seconds, seconds / total) for name, seconds in stages]
    rows.append(
        (
            "(prefect + untracked)",
            total - sum(s for _, s in stages),
            (total - sum(s for _, s in stages)) / total,
        )
    )
    print_table(
        f"bench pipeline: {data_path or 'synthetic'} ({result.record.model_name}, {result.outcome.status})",
        ["stage", "seconds", "share"],
        rows + [("total", total, 1.0)],
    )
    overhead = (total - work) / total
    print(
        f"orchestration + platform overhead (all but training and evaluation): {overhead:.1%} of {total:.1f} s"
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
            "work_seconds": work,
            "overhead_share": overhead,
            "stages": [{"stage": n, "seconds": s} for n, s in stages],
        },
    )
