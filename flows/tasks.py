"""Prefect tasks: each wraps one call into ``components/`` and adds retries, caching,
timeouts and logging. No logic lives here that a test of the components cannot reach.

Tasks take and return small, picklable values (paths, ids, pydantic records) where they
can, so cache keys work and results can be persisted; the heavy objects (trained models)
pass between tasks in memory inside one flow run.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.config import RecopsConfig
from components.errors import VersioningError
from components.workspace import Workspace

if TYPE_CHECKING:
    from components.data.prepare import PreparedData
    from components.deploy.local import Deployment
    from components.evaluation.gate import GateDecision
    from components.models.bundle import ModelBundle
    from components.records import RunRecord
    from components.registry.store import ModelVersion
    from components.training.trainer import TrainResult
    from components.validation.report import ValidationReport
    from components.versioning.dvc_store import DatasetVersion


@dataclass(frozen=True)
class BatchRef:
    """Where a batch of new events is and how to read it."""

    path: str
    fmt: str
    batch_id: str
    synthetic: bool


def _file_digest(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@task(name="fetch-batch", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def fetch_batch(
    cfg: RecopsConfig, ws: Workspace, data_path: str | None, data_format: str
) -> BatchRef:
    """The batch to ingest: the user's file, or a new synthetic batch written to the inbox.

    The batch id is derived from the content, so re-running on the same file is recognised
    instead of appending the same events twice.
    """
    from components.data.synthetic import write_events_parquet
    from components.versioning.dvc_store import DatasetStore

    logger = get_run_logger()
    if data_path is not None:
        path = Path(data_path).expanduser().resolve()
        batch_id = f"{path.stem}-{_file_digest(path)[:10]}" if path.is_file() else path.stem
        logger.info("batch %s from %s (format %s)", batch_id, path, data_format)
        return BatchRef(str(path), data_format, batch_id, synthetic=False)
    current = DatasetStore(ws, cfg.versioning).current()
    batch_no = len(current.batches) if current is not None else 0
    # written under a private name, then renamed by content: concurrent runs never read
    # a half-written batch, and identical batches share one file and one batch id
    partial = ws.inbox_dir / f".synthetic-{batch_no:04d}-{uuid.uuid4().hex}.parquet"
    write_events_parquet(cfg.data.synthetic, partial, batch=batch_no)
    batch_id = f"synthetic-{batch_no:04d}-{_file_digest(partial)[:10]}"
    path = ws.inbox_dir / f"{batch_id}.parquet"
    partial.replace(path)
    logger.info("generated synthetic batch %s (%s)", batch_id, path)
    return BatchRef(str(path), "parquet", batch_id, synthetic=True)


@task(name="validate-and-version", retries=0, cache_policy=NO_CACHE)
def validate_and_version(
    cfg: RecopsConfig, ws: Workspace, batch: BatchRef
) -> tuple[ValidationReport | None, DatasetVersion]:
    """GX-validate the batch, then DVC-version the accepted dataset.

    No retries: a failed expectation is not transient. A rejected batch is quarantined by
    the component and :class:`ValidationFailed` propagates; nothing downstream runs. A
    batch already part of the current version is not appended again.
    """
    from components.validation.ingest import ingest_batch
    from components.versioning.dvc_store import DatasetStore

    logger = get_run_logger()
    store = DatasetStore(ws, cfg.versioning)
    current = store.current()
    if current is not None and batch.batch_id in current.batches:
        logger.info(
            "batch %s is already in dataset version %s: not appended again",
            batch.batch_id,
            current.version,
        )
        return None, current
    try:
        result = ingest_batch(
            Path(batch.path),
            ws,
            cfg.validation,
            cfg.versioning,
            fmt=batch.fmt,
            columns=cfg.data.columns,
            batch_id=batch.batch_id,
        )
    except VersioningError:
        # a concurrent run accepted the same batch between our check and our accept
        current = store.current()
        if current is not None and batch.batch_id in current.batches:
            logger.info(
                "batch %s was accepted by a concurrent run: version %s",
                batch.batch_id,
                current.version,
            )
            return None, current
        raise
    logger.info("batch %s accepted: dataset version %s", batch.batch_id, result.version.version)
    return result.report, result.version


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
def materialize_features(cfg: RecopsConfig, ws: Workspace, data_version: str) -> dict[str, Any]:
    """Feast: write feature tables of ``data_version``, apply the repo, materialize online.

    Cached by (workspace, data version, feature settings): the same version is never
    materialized twice.
    """
    from components.features.store import refresh_features
    from components.versioning.dvc_store import DatasetStore

    events = DatasetStore(ws, cfg.versioning).load_events(data_version)
    result = refresh_features(events, ws, cfg.features)
    get_run_logger().info("features materialized for dataset version %s", data_version)
    return result.model_dump(mode="json")


@task(name="train-challenger", retries=0, cache_policy=NO_CACHE)
def train_challenger(
    cfg: RecopsConfig, ws: Workspace, data_version: str, run_id: str
) -> tuple[PreparedData, TrainResult, RunRecord]:
    """Load the accepted dataset version, split it and train the configured model."""
    from components.data.prepare import prepare
    from components.records import RunRecord, code_revision
    from components.training.trainer import train_model
    from components.versioning.dvc_store import DatasetStore

    logger = get_run_logger()
    events = DatasetStore(ws, cfg.versioning).load_events(data_version)
    prepared = prepare(events, cfg.data)
    logger.info("split: %s", prepared.split.summary())
    run_dir = ws.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    result = train_model(prepared, cfg.model, cfg.train, cfg.eval, run_dir)
    record = RunRecord(
        run_id=run_id,
        model_name=cfg.model.name,
        config=cfg.model_dump(mode="json"),
        config_hash=cfg.fingerprint(),
        code_rev=code_revision(),
        data_version=data_version,
        split=prepared.split.summary(),
        train_seconds=result.train_seconds,
        epochs=result.epochs,
        metrics_valid=result.metrics_valid,
        metrics_test=result.metrics_test,
        artifact_dir=str(run_dir),
    )
    record.save(run_dir / "run_record.json")
    logger.info("trained %s: test %s", cfg.model.name, _fmt_metrics(result.metrics_test))
    return prepared, result, record


def _fmt_metrics(metrics: dict[str, float]) -> str:
    keys = [k for k in ("hr@10", "ndcg@10", "mrr") if k in metrics]
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys)


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
) -> tuple[GateDecision, str | None]:
    """Re-score the champion on the current split and decide (see components.evaluation.challenge)."""
    from components.evaluation.challenge import challenge
    from components.registry.store import ModelRegistry

    registry = ModelRegistry(ws)
    champion = registry.champion()
    champion_bundle = registry.load_bundle(champion.version) if champion is not None else None
    decision = challenge(
        prepared,
        challenger,
        champion_bundle,
        gate_cfg=cfg.gate,
        eval_cfg=cfg.eval,
        train_cfg=cfg.train,
        run_dir=ws.runs_dir / run_id,
    )
    get_run_logger().info("gate decision:\n%s", decision.table())
    return decision, (champion.version if champion is not None else None)


@task(
    name="deploy-bento",
    retries=1,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE,
    timeout_seconds=900,
)
def deploy_bento(cfg: RecopsConfig, ws: Workspace, version: str) -> Deployment:
    """Build the bento of ``version`` and switch the local deployment over to it.

    The previous deployment keeps serving if the new one fails its checks
    (:class:`DeployFailed`); one retry covers a transient port or start-up failure.
    """
    from components.deploy.local import deploy_version

    deployment = deploy_version(ws, version, cfg.serve, cfg.deploy, cfg.features)
    get_run_logger().info("deployed %s at %s", version, deployment.url)
    return deployment


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

    registry = ModelRegistry(ws)
    champion = registry.champion()
    events = DatasetStore(ws, cfg.versioning).load_events(data_version)
    reports, json_path, png_path = run_influence(
        challenger,
        registry.load_bundle(champion.version) if champion is not None else None,
        prepared.sequences,
        prepared.split.test,
        prepared.vocab,
        aligned_event_types(events, prepared.vocab),
        cfg.explain,
        ws.runs_dir / run_id,
        challenger_version=version,
        champion_version=champion.version if champion is not None else None,
    )
    markdown = report_markdown(reports) + f"\nPlot: `{png_path}`; figures: `{json_path}`\n"
    create_markdown_artifact(
        key="recops-influence", markdown=markdown, description="behaviour influence"
    )
    get_run_logger().info("influence report written to %s", png_path)
    return {"json": str(json_path), "png": str(png_path)}
