"""The retrain flow: events -> validated version -> features -> model -> gate -> bento.

Reads like the product description; every step is a task in :mod:`flows.tasks` over a
function in ``components/``. The champion pointer moves only after the new bento is
serving (deploy first, then promote): a deployment that fails its checks leaves both the
old bento serving and the old champion in the registry, with the failure in the history.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from components.config import RecopsConfig, config_from_mapping
from components.errors import DeployFailed, ValidationFailed
from components.workspace import Workspace
from flows.locks import promotion_lock
from flows.tasks import (
    deploy_bento,
    evaluation_gate,
    fetch_batch,
    influence_report,
    materialize_features,
    register_model,
    train_challenger,
    validate_and_version,
)

ACTOR_DEFAULT = "retrain-flow"


def resolve_config(config: dict[str, Any] | None) -> RecopsConfig:
    """Validate a raw config mapping (a flow parameter) over the defaults."""
    return config_from_mapping(config or {})


@flow(name="recops-retrain", description="Validate, version, featurize, train, gate and deploy.")
def retrain_flow(
    config: dict[str, Any] | None = None,
    data_path: str | None = None,
    data_format: str = "auto",
    actor: str = ACTOR_DEFAULT,
) -> dict[str, Any]:
    """Run the whole retrain pipeline once; return the run record as a dict."""
    logger = get_run_logger()
    cfg = resolve_config(config)
    ws = Workspace.at(cfg.workspace).activate()
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]

    batch = fetch_batch(cfg, ws, data_path, data_format)
    try:
        report, data_version = validate_and_version(cfg, ws, batch)
    except ValidationFailed as exc:
        publish_rejected_batch(batch.batch_id, exc)
        raise
    if cfg.features.enabled:
        materialize_features(cfg, ws, data_version.version)
    prepared, trained, record = train_challenger(cfg, ws, data_version.version, run_id)
    version = register_model(ws, trained.bundle, record)
    if cfg.explain.report:
        influence_report(
            cfg, ws, prepared, trained.bundle, data_version.version, version.version, run_id
        )

    with promotion_lock(ws):
        decision, champion_before = evaluation_gate(cfg, ws, prepared, trained.bundle, run_id)
        outcome = promote_or_reject(cfg, ws, version.version, decision, actor)
    outcome |= serving_summary(ws)
    outcome["example_user"] = prepared.vocab.users[0] if prepared.vocab.n_users else None

    record = record.model_copy(
        update={
            "model_version": version.version,
            "gate": decision.model_dump(mode="json"),
            "deployed_version": outcome.get("deployed_version"),
            "status": outcome["status"],
        }
    )
    record.save(ws.runs_dir / run_id / "run_record.json")
    publish_summary(record, data_version, report, decision, champion_before, outcome)
    logger.info("run %s finished: %s", run_id, outcome["status"])
    return record.model_dump(mode="json") | {"outcome": outcome}


def promote_or_reject(
    cfg: RecopsConfig, ws: Workspace, version: str, decision: Any, actor: str
) -> dict[str, Any]:
    """Deploy-then-promote when the gate passed; record a rejection otherwise."""
    from components.registry.store import ModelRegistry

    registry = ModelRegistry(ws)
    gate = decision.model_dump(mode="json")
    if not decision.promote:
        registry.reject(version, actor=actor, reason="; ".join(decision.reasons), gate=gate)
        return {"status": "rejected", "deployed_version": None}
    deployed = None
    if cfg.deploy.target == "local":
        try:
            deployed = deploy_bento(cfg, ws, version)
        except DeployFailed as exc:
            registry.reject(version, actor=actor, reason=f"deploy failed: {exc}", gate=gate)
            raise
    registry.promote(version, actor=actor, reason="; ".join(decision.reasons), gate=gate)
    return {"status": "champion", "deployed_version": version if deployed is not None else None}


def serving_summary(ws: Workspace) -> dict[str, Any]:
    """Which version the local deployment serves now, and where (None when nothing is)."""
    from components.deploy.local import read_state

    state = read_state(ws)
    if state is None or state.version is None:
        return {"serving_version": None, "url": None}
    return {"serving_version": state.version, "url": f"http://{state.host}:{state.public_port}"}


def publish_rejected_batch(batch_id: str, exc: ValidationFailed) -> None:
    """A Markdown artifact saying which expectations failed and where the batch went."""
    create_markdown_artifact(
        key="recops-validation",
        markdown=(
            f"# Batch `{batch_id}` rejected\n\n{exc.message}\n\n"
            f"- quarantine: `{exc.quarantine_path}`\n- report: `{exc.report_path}`\n"
            "\nNo model was trained; serving is untouched.\n"
        ),
        description="Great Expectations rejected the batch",
    )


def _metric_rows(decision: Any) -> list[dict[str, Any]]:
    reference = decision.champion if decision.reference == "champion" else decision.baseline
    rows = []
    for metric, value in sorted(decision.challenger.items()):
        if "@" not in metric and metric != "mrr":
            continue
        ref = reference.get(metric) if reference else None
        rows.append(
            {
                "metric": metric,
                "challenger": round(value, 6),
                decision.reference or "reference": None if ref is None else round(ref, 6),
                "delta": None if ref is None else round(value - ref, 6),
            }
        )
    return rows


def publish_summary(
    record: Any,
    data_version: Any,
    report: Any,
    decision: Any,
    champion_before: str | None,
    outcome: dict[str, Any],
) -> None:
    """The run's Markdown summary and metrics table as Prefect artifacts."""
    rows = _metric_rows(decision)
    create_table_artifact(
        key="recops-metrics", table=rows, description="challenger vs reference, same test split"
    )
    validation = "already accepted (no new rows)" if report is None else report.summary
    md = [
        f"# recops retrain `{record.run_id}`",
        "",
        f"- data version: `{data_version.version}` ({data_version.n_rows:,} events)",
        f"- validation: {validation}",
        f"- model: `{record.model_name}` -> version `{record.model_version}`",
        f"- champion before: `{champion_before}`",
        f"- outcome: **{outcome['status']}**; serving: `{outcome.get('deployed_version') or 'unchanged'}`",
        "",
        "## Gate",
        "```",
        decision.table(),
        "```",
    ]
    create_markdown_artifact(
        key="recops-retrain-summary", markdown="\n".join(md), description="retrain summary"
    )
