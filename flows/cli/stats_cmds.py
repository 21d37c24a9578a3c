"""``recops data stats`` and ``recops bench data``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.app import (
    FormatOpt,
    JsonOutOpt,
    SparkDriverMemoryOpt,
    bench_app,
    console,
    data_app,
    write_json,
)


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
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="memory (one pandas frame), stream (partitioned Parquet, bounded memory) or spark (data.spark_master).",
        ),
    ] = "memory",
    budget_mb: Annotated[
        int, typer.Option("--budget-mb", help="data.memory_budget_mb for the stream engine.")
    ] = 2048,
    events_per_file: Annotated[
        int, typer.Option("--events-per-file", help="Events per Parquet part (stream engine).")
    ] = 1_000_000,
    keep_dir: Annotated[
        Path | None,
        typer.Option(
            "--keep-dir",
            help="Stream and spark engines: keep the Parquet parts here; a rerun with it "
            "skips generating.",
        ),
    ] = None,
    stages: Annotated[
        str | None,
        typer.Option(
            "--stages",
            help="With --keep-dir: only these stages (comma-separated; stream: "
            "generate,load,bucket,vocabulary,validate,version,features,sequences, each reusing "
            "what earlier runs left there; spark: generate,load,validate,version,sequences,features,"
            "compare, where compare runs the stream engine on the same files and checks the "
            "outputs are equal, every feature value and Feast's point-in-time answers "
            "included).",
        ),
    ] = None,
    spark_master: Annotated[
        str, typer.Option("--spark-master", help="data.spark_master for --engine spark.")
    ] = "local[2]",
    spark_driver_memory_mb: SparkDriverMemoryOpt = 1024,
    lock: Annotated[
        Path | None,
        typer.Option(
            "--lock",
            help="Spark engine: measure each stage holding this shared lock file (flock), so a long run "
            "never overlaps another measurement and leaves room between its stages.",
        ),
    ] = None,
    split_only: Annotated[
        bool,
        typer.Option(
            "--split-only",
            help="Only leave-one-out over --events CSR events already in memory (50 per "
            "user): the split's peak RSS at a size the generator would take hours for.",
        ),
    ] = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Wall time and peak RSS of generating, loading, normalising and splitting events."""
    from benchmarks.data import (
        ENGINES,
        SPARK_STAGES,
        STREAM_STAGES,
        run_data_benchmark,
        run_split_benchmark,
    )

    if split_only:
        run_split_benchmark(events, json_out)
        return
    if engine not in ENGINES:
        raise typer.BadParameter(f"choose one of {', '.join(ENGINES)}", param_hint="--engine")
    chosen = tuple(s.strip() for s in stages.split(",")) if stages else None
    known = SPARK_STAGES if engine == "spark" else STREAM_STAGES
    unknown = sorted(set(chosen or ()) - set(known))
    if unknown:
        raise typer.BadParameter(
            f"unknown stage {', '.join(unknown)}; choose from {', '.join(known)}",
            param_hint="--stages",
        )
    run_data_benchmark(
        events,
        json_out,
        engine=engine,
        budget_mb=budget_mb,
        events_per_file=events_per_file,
        keep_dir=keep_dir,
        stages=chosen,
        spark_master=spark_master,
        spark_driver_memory_mb=spark_driver_memory_mb,
        lock=lock,
    )
