"""``recops data stats`` and ``recops bench data``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.app import FormatOpt, JsonOutOpt, bench_app, console, data_app, write_json


@data_app.command("stats")
def data_stats(
    path: Annotated[Path, typer.Argument(help="Event file in any supported format.")],
    fmt: FormatOpt = "auto",
    json_out: JsonOutOpt = None,
) -> None:
    """Print events, users, items, time span and sequence-length quantiles of PATH."""
    from components.data.loaders import describe, load_events

    events = load_events(path, fmt)
    stats = {"path": str(path), "format": events.attrs.get("format", fmt), **describe(events)}
    for key, value in stats.items():
        console.print(f"{key:>14}  {value}")
    if stats["ordinal_time"]:
        console.print("[yellow]note:[/yellow] this format has no time; timestamps are ordinal")
    write_json(json_out, stats)


@bench_app.command("data")
def bench_data(
    events: Annotated[
        int, typer.Option("--events", help="Number of synthetic events.")
    ] = 1_000_000,
    json_out: JsonOutOpt = None,
) -> None:
    """Events/s and peak RSS of generating, loading, normalising and splitting events."""
    from benchmarks.data import run_data_benchmark

    run_data_benchmark(events, json_out)
