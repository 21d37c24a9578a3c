"""``recops train``, ``recops evaluate``, ``recops bench accuracy`` and ``recops bench step``.

Train the configured model on a dataset (path + format, or the bundled synthetic
generator), evaluate a saved model bundle on a dataset, and benchmark the zoo.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.app import (
    ConfigOpt,
    JsonOutOpt,
    SetOpt,
    WorkspaceOpt,
    app,
    bench_app,
    console,
    load_run_config,
    prologue,
    write_json,
)

if TYPE_CHECKING:
    from components.config import RecopsConfig
    from components.data.prepare import PreparedData
    from components.evaluation.breakdown import BucketRow

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", "-d", help="Event file (default: data.path, else synthetic)."),
]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", "-f", help="auto, csv, parquet, recbole, seq, pairs or movielens."),
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Model name (same as --set model.name=...).")
]
EpochsOpt = Annotated[int | None, typer.Option("--max-epochs", help="Cap on training epochs.")]


def _data_overrides(data: Path | None, fmt: str | None) -> list[str]:
    out = []
    if data is not None:
        out.append(f"data.path={data}")
    if fmt is not None:
        out.append(f"data.format={fmt}")
    return out


def load_prepared(cfg: RecopsConfig) -> PreparedData:
    """Events from ``cfg.data`` (file or synthetic generator) -> PreparedData."""
    from components.lifecycle.prepare import prepare_dataset

    return prepare_dataset(cfg.data)


def print_event_types(rows: list[BucketRow]) -> None:
    """Metrics by the target event's type (nothing when the data has one type or none)."""
    if len(rows) < 2:
        return
    typer.echo(f"{'target event':<14}{'users':>8}{'hr@10':>10}{'ndcg@10':>10}{'mrr':>10}")
    for row in rows:
        m = row.metrics
        typer.echo(
            f"{row.bucket:<14}{row.n_users:>8}{m.get('hr@10', float('nan')):>10.4f}"
            f"{m.get('ndcg@10', float('nan')):>10.4f}{m.get('mrr', float('nan')):>10.4f}"
        )


def print_metrics(title: str, valid: dict[str, float] | None, test: dict[str, float]) -> None:
    """One table: metric, valid, test."""
    from components.evaluation.metrics import N_USERS, metric_order

    console.print(f"[bold]{title}[/bold]")
    order = metric_order(sorted({int(m.split("@")[1]) for m in test if "@" in m}))
    names = [m for m in order if m in test] + [
        m for m in sorted(test) if m not in order and m != N_USERS
    ]
    typer.echo(f"{'metric':<14}{'valid':>10}{'test':>10}")
    for name in names:
        v = "-" if valid is None or name not in valid else f"{valid[name]:.4f}"
        typer.echo(f"{name:<14}{v:>10}{test[name]:>10.4f}")
    typer.echo(
        f"{'users':<14}{'-' if valid is None else int(valid['n_users']):>10}{int(test['n_users']):>10}"
    )


@app.command("train")
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    data: DataOpt = None,
    fmt: FormatOpt = None,
    model: ModelOpt = None,
    max_epochs: EpochsOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Train the configured model, restore its best epoch, print validation and test metrics."""
    from components.lifecycle.prepare import prepare_dataset, rank_read
    from components.lifecycle.train import train as train_run
    from components.quiet import ensure_console_handler
    from components.training.ranks import is_rank_zero, shared_run_id

    ensure_console_handler()  # per-epoch lines (and a progress bar on a terminal)

    overrides = _data_overrides(data, fmt) + list(set_ or [])
    if model:
        overrides.append(f"model.name={model}")
    if max_epochs:
        overrides.append(f"train.max_epochs={max_epochs}")
    cfg, ws = prologue(config, overrides, workspace)
    read = rank_read(cfg, ws)  # train.shard_data under DDP: this rank's users only
    prepared = prepare_dataset(cfg.data, read)
    users = f" (rank {read.shard.rank} of {read.shard.world}: its users)" if read else ""
    console.print(f"training {cfg.model.name} on {prepared.split.summary()}{users}")
    with shared_run_id(partial(train_run_id, cfg)) as run_id:
        result = train_run(prepared, cfg, ws.runs_dir / run_id, ws=ws).result
    if read is not None and read.shard.rank == 0:
        read.discard()  # every rank read its buckets before training started
    protocol = "history items excluded" if cfg.eval.exclude_seen else "history items NOT excluded"
    print_metrics(
        f"{cfg.model.name}: {result.epochs} epochs, {result.train_seconds:.1f}s training; "
        f"full ranking over {prepared.split.n_items} items, {protocol}",
        result.metrics_valid,
        result.metrics_test,
    )
    seen_bias = result.bundle.model.learned_seen_offset()
    if seen_bias is not None:
        console.print(f"learned offset for items already in the history: {seen_bias:+.2f} (logits)")
    console.print(f"model bundle: {result.bundle_dir}")
    write_json(
        json_out if is_rank_zero() else None,  # every DDP rank gets here: one writes
        {
            "run_id": run_id,
            "model": cfg.model.name,
            "params": result.bundle.params,
            "epochs": result.epochs,
            "train_seconds": result.train_seconds,
            "samples_per_second": result.samples_per_second,
            "exclude_seen": cfg.eval.exclude_seen,
            "seen_bias": seen_bias,
            "valid": result.metrics_valid,
            "test": result.metrics_test,
            "history": result.history,
            "bundle_dir": str(result.bundle_dir),
            "split": result.split_summary,
        },
    )


def train_run_id(cfg: RecopsConfig) -> str:
    """``<model>-<UTC time>-<config fingerprint>``: the run folder of ``recops train``."""
    return f"{cfg.model.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{cfg.fingerprint()[:6]}"


@app.command("evaluate")
def evaluate_cmd(
    model_dir: Annotated[
        Path, typer.Option("--model-dir", help="A saved model bundle (run_dir/model).")
    ],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: DataOpt = None,
    fmt: FormatOpt = None,
    split: Annotated[str, typer.Option("--split", help="test or valid.")] = "test",
    exclude_seen: Annotated[
        bool | None, typer.Option("--exclude-seen/--keep-seen", help="Default: eval.exclude_seen.")
    ] = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Full-ranking metrics of a saved model bundle on a dataset's split."""
    from components.errors import ConfigError
    from components.evaluation.breakdown import event_type_rows
    from components.lifecycle.evaluate import evaluate_bundle
    from components.models.bundle import ModelBundle

    if split not in ("test", "valid"):
        raise ConfigError(f"--split must be test or valid, not {split!r}")
    bundle = ModelBundle.load(model_dir)
    overrides = _data_overrides(data, fmt) + list(set_ or []) + [f"data.max_len={bundle.max_len}"]
    cfg = load_run_config(config, overrides, None)
    prepared = load_prepared(cfg)
    exclude = cfg.eval.exclude_seen if exclude_seen is None else exclude_seen
    eval_cfg = cfg.eval.model_copy(update={"exclude_seen": exclude})
    result = evaluate_bundle(bundle, prepared, eval_cfg, "test" if split == "test" else "valid")
    protocol = "history items excluded" if exclude else "history items NOT excluded"
    print_metrics(
        f"{bundle.model_name} on {split}: full ranking over {bundle.vocab.n_items} items, {protocol}",
        None,
        result.summary,
    )
    eval_set = prepared.split.test if split == "test" else prepared.split.valid
    by_type = event_type_rows(eval_set, result.per_user, prepared.vocab.event_types)
    print_event_types(by_type)
    write_json(
        json_out,
        {
            "model": bundle.model_name,
            "split": split,
            "exclude_seen": exclude,
            "metrics": result.summary,
            "by_event_type": [row.model_dump() for row in by_type],
        },
    )


@bench_app.command("accuracy")
def bench_accuracy(
    data: Annotated[Path, typer.Option("--data", "-d", help="Event file to benchmark on.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Its format (seq for Beauty.txt).")
    ] = "auto",
    models: Annotated[
        str, typer.Option("--models", help="Comma-separated model names.")
    ] = "pop,sasrec",
    max_epochs: EpochsOpt = None,
    target_ndcg: Annotated[
        float,
        typer.Option(
            "--target-ndcg", help="Report wall seconds until valid NDCG@10 first reaches this."
        ),
    ] = 0.035,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            help="Comma-separated seeds: report mean ± sd of leave-one-out and cold-item "
            "accuracy (models may be variants like sasrec+text+category).",
        ),
    ] = None,
    cold_items: Annotated[
        float,
        typer.Option("--cold-items", help="Share of items held out by the cold-item protocol."),
    ] = 0.1,
    high_target_ndcg: Annotated[
        float,
        typer.Option(
            "--high-target-ndcg", help="A second, higher valid NDCG@10 target (its own column)."
        ),
    ] = 0.05,
    set_: SetOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Train each model (its configs/models/<name>.yaml) and print one accuracy/speed table."""
    from benchmarks.accuracy import format_table, run_accuracy_benchmark
    from components.quiet import ensure_console_handler

    ensure_console_handler()  # one line per epoch: the progress bar is off here
    if seeds is not None:
        _bench_content(data, fmt, models, seeds, cold_items, max_epochs, set_, json_out)
        return
    rows = run_accuracy_benchmark(
        data,
        fmt,
        [m.strip() for m in models.split(",") if m.strip()],
        max_epochs=max_epochs,
        target_ndcg=target_ndcg,
        high_target_ndcg=high_target_ndcg,
        overrides=list(set_ or []),
        progress=lambda line: console.print(line, highlight=False),
    )
    typer.echo(format_table(rows, target_ndcg))
    write_json(
        json_out, {"data": str(data), "format": fmt, "target_ndcg": target_ndcg, "rows": rows}
    )


def _bench_content(
    data: Path,
    fmt: str,
    models: str,
    seeds: str,
    cold_share: float,
    max_epochs: int | None,
    set_: list[str] | None,
    json_out: Path | None,
) -> None:
    """``bench accuracy --seeds``: variants x seeds x (leave-one-out, cold items)."""
    from benchmarks.content import format_content_table, run_content_benchmark, summarise

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"--seeds must be comma-separated integers, got {seeds!r}"
        ) from None

    def report(rows: list[dict], quiet: bool = True) -> None:
        payload = {
            "data": str(data),
            "format": fmt,
            "seeds": seed_list,
            "cold_share": cold_share,
            "overrides": list(set_ or []),
            "summary": summarise(rows),
            "rows": rows,
        }
        if json_out is not None and quiet:
            json_out.write_text(json.dumps(payload, indent=2, default=str))
        elif json_out is not None:
            write_json(json_out, payload)

    rows = run_content_benchmark(
        data,
        fmt,
        [m.strip() for m in models.split(",") if m.strip()],
        seed_list,
        cold_share,
        max_epochs=max_epochs,
        overrides=list(set_ or []),
        progress=lambda line: console.print(line, highlight=False),
        on_rows=report,
    )
    typer.echo(format_content_table(summarise(rows)))
    report(rows, quiet=False)


@bench_app.command("accuracy-summary")
def bench_accuracy_summary(
    runs: Annotated[
        list[Path],
        typer.Argument(help="`recops bench accuracy --json` files, e.g. one per seed."),
    ],
    json_out: JsonOutOpt = None,
) -> None:
    """Mean ± sd over seeds of `bench accuracy` runs, one line per configuration (runs
    that differ in anything but the seed are kept apart)."""
    from benchmarks.accuracy import format_seed_table, read_runs, summarise_seeds

    summary = summarise_seeds(read_runs(runs))
    typer.echo(format_seed_table(summary))
    write_json(json_out, {"runs": [str(p) for p in runs], "summary": summary})


@bench_app.command("step")
def bench_step(
    data: Annotated[Path, typer.Option("--data", "-d", help="Event file to benchmark on.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Its format (seq for Beauty.txt).")
    ] = "auto",
    model: Annotated[str, typer.Option("--model", "-m", help="A causal model.")] = "sasrec",
    batch_sizes: Annotated[
        str, typer.Option("--batch-sizes", help="Comma-separated batch sizes.")
    ] = "64,256",
    precisions: Annotated[
        str, typer.Option("--precisions", help="Comma-separated: fp32, bf16 (CPU autocast).")
    ] = "fp32,bf16",
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per variant.")] = 20,
    set_: SetOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Time training steps by phase (collate, encode, loss, backward) per batch size and precision."""
    from benchmarks.train_step import format_step_table, run_step_benchmark

    rows = run_step_benchmark(
        data,
        fmt,
        model,
        batch_sizes=[int(b) for b in batch_sizes.split(",") if b.strip()],
        precisions=[p.strip() for p in precisions.split(",") if p.strip()],
        steps=steps,
        overrides=list(set_ or []),
    )
    typer.echo(format_step_table(rows))
    write_json(json_out, {"data": str(data), "format": fmt, "model": model, "rows": rows})


@bench_app.command("funnel")
def bench_funnel(
    model: Annotated[str, typer.Option("--model", "-m", help="A sequence model.")] = "sasrec",
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds.")] = "1,2,3",
    users: Annotated[int, typer.Option("--users", help="Synthetic users.")] = 2000,
    items: Annotated[int, typer.Option("--items", help="Synthetic items.")] = 500,
    events: Annotated[
        int, typer.Option("--events", help="Synthetic events (before purchases).")
    ] = 40_000,
    max_epochs: EpochsOpt = None,
    set_: SetOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Next-purchase accuracy with and without event types on a view/cart/purchase funnel."""
    from benchmarks.funnel import format_funnel_table, run_funnel_benchmark, summarise_funnel
    from components.quiet import ensure_console_handler

    ensure_console_handler()
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"--seeds must be comma-separated integers, got {seeds!r}"
        ) from None
    size = {"n_users": users, "n_items": items, "n_events": events}
    rows = run_funnel_benchmark(
        model,
        seed_list,
        size,
        max_epochs=max_epochs,
        overrides=list(set_ or []),
        progress=lambda line: console.print(line, highlight=False),
    )
    summary = summarise_funnel(rows)
    typer.echo(format_funnel_table(summary, model))
    write_json(
        json_out,
        {"model": model, "seeds": seed_list, "size": size, "summary": summary, "rows": rows},
    )


@bench_app.command("shard")
def bench_shard(
    events: Annotated[int, typer.Option("--events", "-n", help="Synthetic events.")] = 1_000_000,
    lock: Annotated[
        Path | None,
        typer.Option("--lock", help="Measure each run holding this shared lock file (flock)."),
    ] = None,
    train: Annotated[
        bool, typer.Option("--train/--prepare-only", help="Also time the two recops train runs.")
    ] = True,
    json_out: JsonOutOpt = None,
) -> None:
    """`recops train` under DDP on 2 CPU ranks, every rank reading all users vs each rank
    its own (train.shard_data): wall time, CPU seconds and peak RSS per rank, and each
    rank's data preparation alone."""
    from benchmarks.shard import run_shard_benchmark

    run_shard_benchmark(events, json_out, lock, train)
