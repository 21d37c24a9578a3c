"""The ``recops`` command tree and the glue every command shares.

Command modules register onto the Typer apps defined here; heavy libraries (torch,
Prefect, Feast, BentoML, GX) are imported inside command bodies so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from components.errors import RecopsError

if TYPE_CHECKING:
    from components.config import RecopsConfig
    from components.workspace import Workspace
from components.quiet import quiet_third_party, show_recops_progress

# soft_wrap: a long line stays one line (a terminal wraps it itself); rich's own hard
# wrapping at 80 columns cut summaries into fragments in log files and CI
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    name="recops",
    help=(
        "recops: validate, version, featurize, train, gate and serve sequential "
        "recommenders, orchestrated by Prefect.\n\n"
        "Start with `recops run` (the whole retrain flow on a bundled synthetic dataset)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Inspect, validate, version and restore event datasets.", no_args_is_help=True
)
features_app = typer.Typer(
    help="Feast feature store: apply, materialize, look up.", no_args_is_help=True
)
models_app = typer.Typer(help="The model registry: list, show, promote.", no_args_is_help=True)
serve_app = typer.Typer(
    help="The local serving deployment: start, status, stop.", no_args_is_help=True
)
bench_app = typer.Typer(
    help="Benchmarks: print a table and write the same figures as JSON.", no_args_is_help=True
)
stage_app = typer.Typer(help="Single pipeline stages (what dvc.yaml runs).", no_args_is_help=True)

app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(models_app, name="models")
app.add_typer(serve_app, name="serve")
app.add_typer(bench_app, name="bench")
app.add_typer(stage_app, name="stage")

# Shared option types -----------------------------------------------------------------
ConfigOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file(s), merged left to right over configs/default.yaml.",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a config value, e.g. --set model.name=gru4rec (repeatable)."
    ),
]
WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="State folder (default: $RECOPS_HOME or ./.recops)."),
]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="auto, csv, parquet, recbole, seq, pairs, movielens.")
]
JsonOutOpt = Annotated[
    Path | None, typer.Option("--json", help="Also write the figures as JSON to this file.")
]
SparkDriverMemoryOpt = Annotated[
    int,
    typer.Option(
        "--spark-driver-memory-mb",
        help="data.spark_driver_memory_mb for --engine spark: the driver's JVM heap "
        "(Spark's feature tables at 10M events need more than the default).",
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def load_run_config(
    config: list[Path] | None, overrides: list[str] | None, workspace: Path | None
) -> RecopsConfig:
    """Load and validate the run configuration; ``--workspace`` wins over the config's."""
    from components.config import load_config

    cfg = load_config(config or [], overrides or [])
    if workspace is not None:
        cfg = cfg.model_copy(update={"workspace": str(workspace)})
    return cfg


def open_workspace(cfg_or_path: RecopsConfig | Path | str | None = None) -> Workspace:
    """The activated :class:`Workspace` for a config (or a path, or the default)."""
    from components.config import RecopsConfig
    from components.workspace import Workspace

    root = cfg_or_path.workspace if isinstance(cfg_or_path, RecopsConfig) else cfg_or_path
    return Workspace.at(root).activate()


def prologue(
    config: list[Path] | None, overrides: list[str] | None, workspace: Path | None
) -> tuple[RecopsConfig, Workspace]:
    """What every command starts with: the validated config and its activated workspace."""
    cfg = load_run_config(config, overrides, workspace)
    return cfg, open_workspace(cfg)


def write_json(path: Path | None, payload: Any) -> None:
    """Write ``payload`` as pretty JSON when ``path`` is given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    console.print(f"[dim]wrote {path}[/dim]")


def _print_error(exc: RecopsError) -> None:
    # one line each, whatever the terminal width: scripts grep these
    err_console.print(f"[bold red]error:[/bold red] {exc.message}", highlight=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[dim]hint: {exc.hint}[/dim]", highlight=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point: user errors become one line and an exit code."""
    quiet_third_party()
    show_recops_progress()
    from flows.reaper import mark_owner, reap_orphaned_servers

    reap_orphaned_servers()  # temporary Prefect servers of killed runs (~200 MB each)
    mark_owner()
    import flows.cli  # noqa: F401  (registers every command module)

    try:
        # with standalone_mode=False click *returns* the code of a typer.Exit instead of
        # exiting with it: pass it on, or every command's own exit code is lost
        code = app(standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except RecopsError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors arrive here with standalone_mode=False
        import click

        from components.errors import storage_full

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        full = storage_full(exc)  # wherever it happened (GX, DVC, registry, Prefect)
        if full is not None:
            _print_error(full)
            sys.exit(full.exit_code)
        raise
