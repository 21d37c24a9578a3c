"""``recops bench data``: generate, load, normalise and split N synthetic events."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import StageFigures, measure, print_table, write_report
from components.data.config import DataConfig, SyntheticConfig
from components.data.loaders import load_events
from components.data.prepare import prepare


def run_data_benchmark(
    n_events: int, json_out: Path | None = None, seed: int = 7
) -> dict[str, Any]:
    """Measure each data stage on ``n_events`` synthetic events (about 50 per user)."""
    from components.data.synthetic import write_events_parquet

    n_users = max(1, n_events // 50)
    synth = SyntheticConfig(
        n_users=n_users, n_items=max(100, n_events // 200), n_events=n_events, seed=seed
    )
    stages: list[StageFigures] = []
    with tempfile.TemporaryDirectory(prefix="recops-bench-") as tmp:
        path = Path(tmp) / "events.parquet"
        with measure("generate+write parquet") as fig:
            write_events_parquet(synth, path)
        stages.append(fig)
        with measure("load+normalise") as fig:
            events = load_events(path, "parquet")
        stages.append(fig)
        with measure("sequences+split") as fig:
            prepared = prepare(events, DataConfig(max_len=50))
        fig.extra = prepared.split.summary()
        stages.append(fig)
    rows = [
        (s.name, s.seconds, n_events / s.seconds if s.seconds else 0.0, s.peak_rss_mb)
        for s in stages
    ]
    print_table(
        f"bench data: {n_events:,} synthetic events",
        ["stage", "seconds", "events/s", "peak RSS MB"],
        rows,
    )
    return write_report(
        json_out,
        "data",
        {
            "events": n_events,
            "users": n_users,
            "stages": [
                {
                    "stage": s.name,
                    "seconds": s.seconds,
                    "events_per_s": n_events / s.seconds if s.seconds else None,
                    "peak_rss_mb": s.peak_rss_mb,
                    **s.extra,
                }
                for s in stages
            ],
        },
    )
