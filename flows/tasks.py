"""Prefect tasks: each wraps one call into :mod:`components.lifecycle` and adds retries,
caching, timeouts and logging. No logic lives here that a test of the components cannot
reach.

Tasks take and return small, picklable values (paths, ids, pydantic records) where they
can, so cache keys work and results can be persisted; the heavy objects (trained models)
pass between tasks in memory inside one flow run.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.config import RecopsConfig
from components.lifecycle.ingest import BatchRef, Ingested
from components.records import RunRecord
from components.workspace import Workspace

if TYPE_CHECKING:
    from components.data.prepare import PreparedData
    from components.deploy.targets import Deployed
    from components.features.store import MaterializeResult
    from components.lifecycle.challenge import Challenge
    from components.lifecycle.train import TrainedRun
    from components.models.bundle import ModelBundle
    from components.records import RunRecord
    from components.registry.store import ModelVersion


@task(name="fetch-batch", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def fetch_batch(
    cfg: RecopsConfig, ws: Workspace, data_path: str | None, data_format: str
) -> BatchRef:
    """The batch to ingest: the user's file, or a new synthetic batch written to the inbox
    (ids derived from the content: a re-run never appends the same events twice)."""
    from components.lifecycle.ingest import fetch_batch as fetch

    batch = fetch(ws, cfg.data, cfg.versioning, data_path, data_format)
    get_run_logger().info("batch %s from %s (format %s)", batch.batch_id, batch.path, batch.fmt)
    return batch


@task(name="validate-and-version", retries=0, cache_policy=NO_CACHE)
def validate_and_version(cfg: RecopsConfig, ws: Workspace, batch: BatchRef) -> Ingested:
    """GX-validate the batch, then DVC-version the accepted dataset (lifecycle.ingest).

    No retries: a failed expectation is not transient. A rejected batch is quarantined and
    :class:`ValidationFailed` propagates; nothing downstream runs.
    """
    from components.lifecycle.ingest import ingest

    ingested = ingest(batch, ws, cfg.data, cfg.validation, cfg.versioning)
    verb = "accepted" if ingested.appended else "already in"
    get_run_logger().info(
        "batch %s %s dataset version %s", batch.batch_id, verb, ingested.version.version
    )
    return ingested


@task(name="validate-and-version-catalogue", retries=0, cache_policy=NO_CACHE)
def validate_and_version_catalogue(cfg: RecopsConfig, ws: Workspace, path: str) -> Ingested:
    """GX-validate the item catalogue ``path`` (the ``recops_catalogue`` suite) and add it
    to the current dataset version, or quarantine it (lifecycle.ingest.ingest_catalogue)."""
    from components.lifecycle.ingest import ingest_catalogue

    ingested = ingest_catalogue(path, ws, cfg.data, cfg.validation, cfg.versioning)
    verb = "accepted into" if ingested.appended else "already in"
    get_run_logger().info(
        "catalogue %s %s dataset version %s", ingested.batch_id, verb, ingested.version.version
    )
    return ingested


def workspace_instance(ws: Workspace) -> str:
    """A random id created with the workspace: cache keys never outlive a deleted workspace."""
    marker = ws.root / ".instance-id"
    if not marker.exists():
        marker.write_text(uuid.uuid4().hex)
    return marker.read_text().strip()


def _features_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    cfg: RecopsConfig = parameters["cfg"]
    ws: Workspace = parameters["ws"]
    blob = json.dumps(
        [
            str(ws.root),
            workspace_instance(ws),
            parameters["data_version"],
            cfg.features.model_dump(mode="json"),
        ],
        sort_keys=True,
    )
    return "recops-features-" + hashlib.sha256(blob.encode()).hexdigest()[:24]


@task(
    name="materialize-features",
    retries=1,
    retry_delay_seconds=5,
    cache_key_fn=_features_cache_key,
    persist_result=True,
)
def materialize_features(cfg: RecopsConfig, ws: Workspace, data_version: str) -> MaterializeResult:
    """Feast: write feature tables of ``data_version`` (with its item catalogue's content:
    text vectors and categories), apply the repo, materialize online (lifecycle.features:
    with data.engine=stream the tables are built in passes from the version's files).

    Cached by (workspace, data version, feature settings): the same version is never
    materialized twice.
    """
    from components.lifecycle.features import refresh_version_features

    result = refresh_version_features(ws, cfg.data, cfg.features, cfg.versioning, data_version)
    get_run_logger().info("features materialized for dataset version %s", data_version)
    return result


@task(name="prepare-data", retries=0, cache_policy=NO_CACHE)
def prepare_data(cfg: RecopsConfig, ws: Workspace, data_version: str) -> PreparedData:
    """The accepted dataset version, prepared and split (lifecycle.prepare)."""
    from components.lifecycle.prepare import prepare_version

    prepared = prepare_version(ws, cfg.data, cfg.versioning, data_version)
    get_run_logger().info("split: %s", prepared.split.summary())
    return prepared


@task(name="training-features", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def point_in_time_features(
    cfg: RecopsConfig, ws: Workspace, prepared: PreparedData, data_version: str, run_id: str
) -> str:
    """The split's labels with Feast's point-in-time user/item features (lifecycle.prepare,
    cached per data version and feature repo), written to the run folder; returns the
    file's path."""
    from components.lifecycle.prepare import training_features

    found = training_features(ws, cfg.features, prepared, data_version)
    frame = found.frame
    path = ws.runs_dir / run_id / "training_features.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    get_run_logger().info(
        "training features: %d label rows x %d columns from Feast (%s) -> %s",
        len(frame),
        frame.shape[1],
        "cached" if found.cached else f"{cfg.features.offline_store} offline store",
        path,
    )
    return str(path)


@task(name="train-challenger", retries=0, cache_policy=NO_CACHE)
def train_challenger(
    cfg: RecopsConfig, ws: Workspace, prepared: PreparedData, data_version: str, run_id: str
) -> TrainedRun:
    """Train the configured model on the split (lifecycle.train)."""
    from components.evaluation.metrics import format_headline
    from components.lifecycle.train import train

    trained = train(prepared, cfg, ws.runs_dir / run_id, data_version=data_version, ws=ws)
    get_run_logger().info(
        "trained %s: test %s", cfg.model.name, format_headline(trained.result.metrics_test)
    )
    return trained


@task(name="register-model", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def register_model(ws: Workspace, bundle: ModelBundle, record: RunRecord) -> ModelVersion:
    """Store the trained bundle with its run record in the registry (status candidate)."""
    from components.registry.store import ModelRegistry

    version = ModelRegistry(ws).register(bundle, record)
    get_run_logger().info("registered %s as candidate %s", record.model_name, version.version)
    return version


@task(name="evaluation-gate", retries=0, cache_policy=NO_CACHE)
def evaluation_gate(
    cfg: RecopsConfig, ws: Workspace, prepared: PreparedData, challenger: ModelBundle, run_id: str
) -> Challenge:
    """Re-score the champion on the current split and decide (lifecycle.challenge)."""
    from components.lifecycle.challenge import challenge_champion

    outcome = challenge_champion(
        ws,
        prepared,
        challenger,
        gate_cfg=cfg.gate,
        eval_cfg=cfg.eval,
        train_cfg=cfg.train,
        run_dir=ws.runs_dir / run_id,
    )
    get_run_logger().info("gate decision:\n%s", outcome.decision.table())
    return outcome


@task(
    name="deploy",
    retries=1,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE,
    timeout_seconds=900,
)
def deploy_version(cfg: RecopsConfig, ws: Workspace, version: str) -> Deployed:
    """Put ``version`` into service through the configured deploy target (lifecycle.deploy).

    Whatever served before keeps serving if the new one fails its checks
    (:class:`DeployFailed`); one retry covers a transient port or start-up failure.
    """
    from components.lifecycle.deploy import target_for

    deployed = target_for(cfg.deploy, cfg.serve, cfg.features).deploy(ws, version)
    get_run_logger().info("deployed %s", deployed.describe())
    return deployed


@task(name="influence-report", retries=0, cache_policy=NO_CACHE)
def influence_report(
    cfg: RecopsConfig,
    ws: Workspace,
    prepared: Any,
    challenger: Any,
    data_version: str,
    version: str,
    run_id: str,
) -> dict[str, Any]:
    """Which behaviour the new model relies on, beside the champion's: ``influence.json``
    and ``influence.png`` in the run folder and a Markdown artifact
    (see components.explain.report)."""
    from prefect.artifacts import create_markdown_artifact

    from components.explain.histories import aligned_event_types
    from components.explain.report import report_markdown, run_influence
    from components.registry.store import ModelRegistry
    from components.versioning.dvc_store import DatasetStore

    # a champion that cannot be loaded is left out here; the gate records why
    champion, champion_bundle, champion_error = ModelRegistry(ws).champion_bundle()
    if champion_error:
        get_run_logger().warning("influence report without the champion: %s", champion_error)
    events = DatasetStore(ws, cfg.versioning).load_events(data_version)
    reports, json_path, png_path = run_influence(
        challenger,
        champion_bundle,
        prepared.sequences,
        prepared.split.test,
        prepared.vocab,
        aligned_event_types(events, prepared.vocab),
        cfg.explain,
        ws.runs_dir / run_id,
        challenger_version=version,
        champion_version=champion if champion_bundle is not None else None,
    )
    markdown = report_markdown(reports) + f"\nPlot: `{png_path}`; figures: `{json_path}`\n"
    create_markdown_artifact(
        key="recops-influence", markdown=markdown, description="behaviour influence"
    )
    get_run_logger().info("influence report written to %s", png_path)
    return {"json": str(json_path), "png": str(png_path)}


@task(name="run-report", retries=0, cache_policy=NO_CACHE)
def write_run_report(ws: Workspace, record: RunRecord) -> RunRecord:
    """Save the run record, draw its plots and write ``report.html`` beside it.

    A report that fails to render is logged and the run goes on: the record is saved first
    and the page is a view of it, never the source of truth.
    """
    from components.reporting.page import write_report

    run_dir = ws.runs_dir / record.run_id
    record.save(run_dir / "run_record.json")
    try:
        path = write_report(record, run_dir)
    except Exception:  # noqa: BLE001 - a broken plot must not fail a deployed run
        get_run_logger().exception("run report for %s could not be written", record.run_id)
        return record
    record = record.model_copy(update={"report_path": str(path)})
    record.save(run_dir / "run_record.json")
    get_run_logger().info("run report: %s", path)
    return record
