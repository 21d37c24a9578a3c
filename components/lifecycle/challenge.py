"""Challenge: the challenger against the current champion on one prepared dataset.

Re-score the challenger and the current champion on the same, current test split, train
the ``pop`` baseline when no champion exists yet (the first model must beat it), and ask
:func:`components.evaluation.gate.decide`. Lives here, not in ``evaluation``: it trains
(the baseline), and evaluation must not depend on training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from components.data.prepare import PreparedData
from components.evaluation.config import EvalConfig, GateConfig
from components.evaluation.gate import GateDecision, decide, rescore_on
from components.models.bundle import ModelBundle
from components.models.config import ModelConfig
from components.registry.store import ModelRegistry
from components.training.config import TrainConfig
from components.workspace import Workspace

log = logging.getLogger(__name__)


def baseline_bundle(
    prepared: PreparedData,
    gate_cfg: GateConfig,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    run_dir: Path,
) -> ModelBundle:
    """Train the gate's baseline model (``pop`` by default) on the same split."""
    from components.training.trainer import train_model

    result = train_model(
        prepared,
        ModelConfig(name=gate_cfg.baseline),
        train_cfg.model_copy(update={"progress_bar": False}),
        eval_cfg,
        run_dir / "baseline",
    )
    return result.bundle


def challenge(
    prepared: PreparedData,
    challenger: ModelBundle,
    champion: ModelBundle | None,
    *,
    gate_cfg: GateConfig,
    eval_cfg: EvalConfig,
    train_cfg: TrainConfig,
    run_dir: Path,
    device: str = "cpu",
    champion_error: str | None = None,
) -> GateDecision:
    """Gate decision for ``challenger`` against ``champion`` (or the baseline) on ``prepared``.

    ``champion_error`` says why a champion exists but could not be loaded: the gate then
    holds the challenger to the baseline (as for a first model) and records the error
    in the decision, so a corrupt champion never blocks retraining silently or forever.
    """
    test = prepared.split.test
    challenger_result = rescore_on(challenger, test, prepared.vocab, eval_cfg, device)
    champion_result = baseline_result = None
    if champion is not None:
        champion_result = rescore_on(champion, test, prepared.vocab, eval_cfg, device)
    else:
        if champion_error:
            log.warning("champion unusable (%s): comparing with the baseline", champion_error)
        else:
            log.info("no champion yet: the challenger must beat the %r baseline", gate_cfg.baseline)
        baseline = baseline_bundle(prepared, gate_cfg, train_cfg, eval_cfg, run_dir)
        baseline_result = rescore_on(baseline, test, prepared.vocab, eval_cfg, device)
    decision = decide(challenger_result, champion_result, baseline_result, gate_cfg)
    if champion_error:
        decision = decision.model_copy(update={"champion_error": champion_error})
    return decision


@dataclass(frozen=True)
class Challenge:
    """The gate's decision and the champion it was measured against (None: the baseline)."""

    decision: GateDecision
    champion_before: str | None


def challenge_champion(
    ws: Workspace,
    prepared: PreparedData,
    challenger: ModelBundle,
    *,
    gate_cfg: GateConfig,
    eval_cfg: EvalConfig,
    train_cfg: TrainConfig,
    run_dir: Path,
) -> Challenge:
    """:func:`challenge` against the registry's current champion (loaded from its store).

    A champion whose artifact is corrupt or missing does not block retraining: the
    challenger is held to the baseline instead and the decision records why
    (``champion_error``, shown in the gate table, the run summary and ``models show``).
    Operators need the next run to succeed: the corrupt champion can be neither re-scored
    nor redeployed, and the baseline rule still keeps a broken model from shipping."""
    registry = ModelRegistry(ws)
    champion, champion_bundle, champion_error = registry.champion_bundle()
    decision = challenge(
        prepared,
        challenger,
        champion_bundle,
        gate_cfg=gate_cfg,
        eval_cfg=eval_cfg,
        train_cfg=train_cfg,
        run_dir=run_dir,
        champion_error=champion_error,
    )
    return Challenge(decision, champion)
