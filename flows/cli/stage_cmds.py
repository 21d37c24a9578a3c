"""``recops stage ...``: the pipeline's stages one at a time, for ``dvc repro``.

Each stage reads and writes plain files inside the repo (what ``dvc.yaml`` declares as
deps/outs/metrics) and calls the same components as the retrain flow's tasks. The run
configuration is a normal recops config file (``params.yaml``), so DVC tracks exactly the
parameters the model depends on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.app import (
    ConfigOpt,
    SetOpt,
    WorkspaceOpt,
    console,
    load_run_config,
    prologue,
    stage_app,
)

if TYPE_CHECKING:
    import pandas as pd

InOpt = Annotated[
    Path, typer.Option("--events", help="Contract events (Parquet) from the prepare stage.")
]
ItemsOpt = Annotated[
    Path | None,
    typer.Option("--items", help="Item catalogue (Parquet) from the prepare stage; empty: none."),
]


def _read_catalogue(path: Path | None) -> pd.DataFrame | None:
    """The catalogue the prepare stage wrote (None without one, or when it has no rows)."""
    import pandas as pd

    if path is None:
        return None
    frame = pd.read_parquet(path)
    return frame if len(frame) else None


@stage_app.command("prepare")
def stage_prepare(
    out: Annotated[
        Path, typer.Option("--out", help="Where to write the contract events (Parquet).")
    ],
    items_out: Annotated[
        Path | None,
        typer.Option(
            "--items-out", help="Where to write the item catalogue (Parquet; no rows: none)."
        ),
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Load data.path (or generate data.synthetic) into the event contract, and its item
    catalogue (data.items, a RecBole .item beside the events, or the synthetic world's)."""
    import pandas as pd

    from components.data.catalogue import CATALOGUE_COLUMNS, catalogue_from_config
    from components.lifecycle.prepare import load_dataset

    cfg = load_run_config(config, overrides, None)
    events = load_dataset(cfg.data)
    out.parent.mkdir(parents=True, exist_ok=True)
    events.to_parquet(out, index=False)
    console.print(f"prepare: {len(events):,} events -> {out}")
    if items_out is not None:
        catalogue = catalogue_from_config(cfg.data)
        if catalogue is None:
            catalogue = pd.DataFrame({column: pd.Series(dtype=str) for column in CATALOGUE_COLUMNS})
        items_out.parent.mkdir(parents=True, exist_ok=True)
        catalogue.to_parquet(items_out, index=False)
        console.print(f"prepare: {len(catalogue):,} catalogue items -> {items_out}")


@stage_app.command("validate")
def stage_validate(
    events_path: InOpt,
    out: Annotated[Path, typer.Option("--out", help="Validation report (JSON).")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run the GX event-contract suite (lifecycle.ingest, as ``recops data add`` does);
    on failure quarantine the batch and exit non-zero (ValidationFailed)."""
    import pandas as pd

    from components.lifecycle.ingest import check_batch, reject

    cfg, ws = prologue(config, overrides, workspace)
    events = pd.read_parquet(events_path)
    checked = check_batch(
        events, ws, cfg.data, cfg.validation, cfg.versioning, batch_id=events_path.stem
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(checked.report.model_dump_json(indent=2))
    console.print(f"validate: {checked.report.summary}")
    if not checked.report.passed:
        reject(ws, events, checked.report, checked.batch_id)


@stage_app.command("features")
def stage_features(
    events_path: InOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the user/item feature tables.")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Compute the user and item feature tables (the Feast offline sources)."""
    import pandas as pd

    from components.features.tables import item_feature_table, user_feature_table

    cfg = load_run_config(config, overrides, None)
    events = pd.read_parquet(events_path)
    out.mkdir(parents=True, exist_ok=True)
    users = user_feature_table(events, cfg.features.history_length, cfg.features.windows_days)
    items = item_feature_table(events, cfg.features.windows_days)
    users.to_parquet(out / "user_features.parquet", index=False)
    items.to_parquet(out / "item_features.parquet", index=False)
    console.print(f"features: {len(users):,} user rows, {len(items):,} item rows -> {out}")


@stage_app.command("train")
def stage_train(
    events_path: InOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the trained model bundle.")],
    metrics: Annotated[Path, typer.Option("--metrics", help="Validation metrics (JSON).")],
    items: ItemsOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Train the configured model on the split of the events (with the item catalogue,
    whose content reaches the model through the workspace's Feast store); save the bundle."""
    import tempfile

    import pandas as pd

    from components.data.prepare import prepare
    from components.lifecycle.prepare import require_whole_data
    from components.lifecycle.train import train

    cfg, ws = prologue(config, overrides, workspace)
    require_whole_data(cfg, "`recops stage train`")
    prepared = prepare(pd.read_parquet(events_path), cfg.data, _read_catalogue(items))
    with tempfile.TemporaryDirectory(prefix="recops-stage-") as tmp:
        result = train(prepared, cfg, Path(tmp) / "run", ws=ws).result
        out.mkdir(parents=True, exist_ok=True)
        result.bundle.save(out)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(
        json.dumps({"valid": result.metrics_valid, "epochs": result.epochs}, indent=2)
    )
    console.print(f"train: {cfg.model.name} in {result.epochs} epochs -> {out}")


@stage_app.command("evaluate")
def stage_evaluate(
    events_path: InOpt,
    model: Annotated[
        Path, typer.Option("--model", help="Model bundle folder from the train stage.")
    ],
    metrics: Annotated[
        Path, typer.Option("--metrics", help="Test metrics (JSON) for `dvc metrics`.")
    ],
    items: ItemsOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Full-ranking test metrics of the saved bundle on the same split."""
    import pandas as pd

    from components.data.prepare import prepare
    from components.evaluation.metrics import format_headline
    from components.lifecycle.evaluate import evaluate_bundle
    from components.models.bundle import ModelBundle

    cfg = load_run_config(config, overrides, None)
    prepared = prepare(pd.read_parquet(events_path), cfg.data, _read_catalogue(items))
    bundle = ModelBundle.load(model)
    result = evaluate_bundle(bundle, prepared, cfg.eval, "test")
    summary = {k: float(v) for k, v in result.summary.items()}
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps({"test": summary}, indent=2, sort_keys=True))
    console.print(f"evaluate: {format_headline(summary)}")
