"""The retrain flow: events -> validated version -> features -> model -> gate -> deploy.

With ``deploy.mode: shadow | canary`` a challenger that wins the offline gate is served
beside the champion instead, and the run pauses (Prefect) until the online decision
promotes or retires it (:mod:`flows.online`).

Reads like the product description; every step is a task in :mod:`flows.tasks` over one
use case in :mod:`components.lifecycle`. The champion pointer moves only after the new
version is deployed through the configured target (deploy first, then promote): a
deployment that fails leaves the old version serving and the old champion in the
registry, with the failure in the history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from components.config import RecopsConfig, config_from_mapping
from components.errors import ValidationFailed
from components.evaluation.gate import GateDecision
from components.lifecycle.ingest import Ingested
from components.lifecycle.prepare import require_whole_data
from components.lifecycle.promote import Promotion, gate_and_promote, promotion_lock
from components.lifecycle.train import new_run_id
from components.quiet import quiet_third_party, show_recops_progress
from components.records import RunRecord
from components.workspace import Workspace
from flows.online import online_decision_flow, start_challenger
from flows.results import RetrainResult, RunOutcome
from flows.tasks import (
    deploy_version,
    evaluation_gate,
    fetch_batch,
    influence_report,
    materialize_features,
    point_in_time_features,
    prepare_data,
    register_model,
    train_challenger,
    validate_and_version,
    validate_and_version_catalogue,
    write_run_report,
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
) -> RetrainResult:
    """Run the whole retrain pipeline once; return its run record and outcome."""
    quiet_third_party()
    show_recops_progress()
    logger = get_run_logger()
    cfg = resolve_config(config)
    require_whole_data(cfg, "the retrain flow")
    ws = Workspace.at(cfg.workspace).activate()
    run_id = new_run_id()

    batch = fetch_batch(cfg, ws, data_path, data_format)
    try:
        ingested = validate_and_version(cfg, ws, batch)
    except ValidationFailed as exc:
        publish_rejected_batch(batch.batch_id, exc)
        raise
    catalogue = versioned_catalogue(cfg, ws)
    data_version = (catalogue or ingested).version.version
    if cfg.features.enabled:
        materialize_features(cfg, ws, data_version)
    prepared = prepare_data(cfg, ws, data_version)
    features_path = (
        point_in_time_features(cfg, ws, prepared, data_version, run_id)
        if cfg.features.enabled
        else None
    )
    trained = train_challenger(cfg, ws, prepared, data_version, run_id)
    version = register_model(ws, trained.result.bundle, trained.record).version
    if cfg.explain.report:
        influence_report(cfg, ws, prepared, trained.result.bundle, data_version, version, run_id)

    online = cfg.deploy.mode != "replace"
    with promotion_lock(ws):
        gate = evaluation_gate(cfg, ws, prepared, trained.result.bundle, run_id)
        if online and gate.decision.promote:  # offline win: serve it beside the champion
            start_challenger(cfg, ws, version, actor)
        else:
            promotion = gate_and_promote(
                ws,
                version,
                gate.decision,
                lambda w, v: deploy_version(cfg, w, v),
                actor=actor,
            )
    if online and gate.decision.promote:  # paused until the online decision
        promotion = online_decision_flow(config=cfg.model_dump(mode="json"), actor=actor).promotion
    example_user = prepared.vocab.users[0] if prepared.vocab.n_users else None
    outcome = run_outcome(ws, promotion, example_user)

    record = trained.record.model_copy(
        update={
            "model_version": version,
            "gate": gate.decision.model_dump(mode="json"),
            "deployed_version": outcome.deployed_version,
            "status": promotion.status,
            "training_features": features_path,
            "validation": validation_summary(ingested, catalogue),
            **deployment_lineage(ws, outcome.deployed_version),
        }
    )
    record = write_run_report(ws, record)
    publish_summary(record, ingested, gate.decision, gate.champion_before, outcome)
    logger.info("run %s finished: %s; report %s", run_id, promotion.status, record.report_path)
    return RetrainResult(record=record, outcome=outcome)


def run_outcome(ws: Workspace, promotion: Promotion, example_user: str | None) -> RunOutcome:
    """Status, what this run deployed, and what serves now (local target) and where."""
    deployed = promotion.deployed
    return RunOutcome(
        status=promotion.status,
        deployed_version=deployed.version if deployed and deployed.target != "none" else None,
        deploy_target=deployed.target if deployed else None,
        deploy_detail=dict(deployed.detail) if deployed else {},
        example_user=example_user,
        **serving_summary(ws),
    )


def serving_summary(ws: Workspace) -> dict[str, str | None]:
    """Which version the local deployment serves now, and where (None when nothing is)."""
    from components.deploy.local import read_state

    state = read_state(ws)
    if state is None or state.version is None:
        return {"serving_version": None, "url": None}
    return {"serving_version": state.version, "url": f"http://{state.host}:{state.public_port}"}


def versioned_catalogue(cfg: RecopsConfig, ws: Workspace) -> Ingested | None:
    """``data.items`` (``recops run --items``) validated and added to the dataset version
    (None without one); a rejected catalogue is quarantined, published, and stops the run."""
    if not cfg.data.items:
        return None
    try:
        return validate_and_version_catalogue(cfg, ws, cfg.data.items)
    except ValidationFailed as exc:
        publish_rejected_batch(f"catalogue {Path(cfg.data.items).name}", exc)
        raise


def validation_summary(ingested: Ingested, catalogue: Ingested | None = None) -> dict[str, Any]:
    """What the run record keeps of the batch's validation (None fields: no new rows), and
    of the item catalogue's when the run had one."""
    report = ingested.report
    summary: dict[str, Any] = {
        "summary": "already accepted (no new rows)" if report is None else report.summary,
        "data_docs_path": None if report is None else report.data_docs_path,
        "n_rows": ingested.version.n_rows,
        "batch_id": ingested.batch_id,
    }
    if catalogue is not None:
        found = catalogue.report
        summary["catalogue"] = {
            "batch_id": catalogue.batch_id,
            "n_items": catalogue.version.n_catalogue_items,
            "summary": "already in this version" if found is None else found.summary,
            "data_docs_path": None if found is None else found.data_docs_path,
        }
    return summary


def deployment_lineage(ws: Workspace, deployed_version: str | None) -> dict[str, Any]:
    """The bento tag and deploy time of what this run deployed (empty when it deployed nothing)."""
    from components.deploy.local import read_state

    state = read_state(ws) if deployed_version else None
    if state is None or state.version != deployed_version:
        return {}
    return {"bento_tag": state.bento_tag, "deployed_at": state.deployed_at}


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


def _metric_rows(decision: GateDecision) -> list[dict[str, Any]]:
    from components.evaluation.metrics import MRR

    reference = decision.champion if decision.reference == "champion" else decision.baseline
    rows = []
    for metric, value in sorted(decision.challenger.items()):
        if "@" not in metric and metric != MRR:
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
    record: RunRecord,
    ingested: Ingested,
    decision: GateDecision,
    champion_before: str | None,
    outcome: RunOutcome,
) -> None:
    """The run's Markdown summary and metrics table as Prefect artifacts."""
    rows = _metric_rows(decision)
    create_table_artifact(
        key="recops-metrics", table=rows, description="challenger vs reference, same test split"
    )
    report = ingested.report
    validation = "already accepted (no new rows)" if report is None else report.summary
    version = ingested.version
    md = [
        f"# recops retrain `{record.run_id}`",
        "",
        f"- data version: `{version.version}` ({version.n_rows:,} events)",
        f"- validation: {validation}",
        f"- model: `{record.model_name}` -> version `{record.model_version}`",
        f"- champion before: `{champion_before}`",
        f"- outcome: **{outcome.status}**; deployed: `{outcome.deployed_version or 'nothing'}`"
        f" (target {outcome.deploy_target or '-'})",
        "",
        "## Gate",
        "```",
        decision.table(),
        "```",
    ]
    if record.report_path:
        uri = Path(record.report_path).resolve().as_uri()
        md[1:1] = ["", f"**[Run report]({uri})** (`{record.report_path}`)"]
        create_link_artifact(
            key="recops-run-report", link=uri, link_text=f"run report {record.run_id}"
        )
    create_markdown_artifact(
        key="recops-retrain-summary", markdown="\n".join(md), description="retrain summary"
    )
