"""Run the champion/challenger comparison on one prepared dataset.

The orchestration-free half of the retrain flow's gate step: re-score the challenger and
the current champion on the same, current test split, train the ``pop`` baseline when no
champion exists yet (the first model must beat it), and ask :func:`gate.decide`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from components.data.prepare import PreparedData
from components.evaluation.config import EvalConfig, GateConfig
from components.evaluation.gate import GateDecision, decide, rescore_on
from components.models.bundle import ModelBundle
from components.models.config import ModelConfig
from components.training.config import TrainConfig

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
) -> GateDecision:
    """Gate decision for ``challenger`` against ``champion`` (or the baseline) on ``prepared``."""
    test = prepared.split.test
    challenger_result = rescore_on(challenger, test, prepared.vocab, eval_cfg, device)
    champion_result = baseline_result = None
    if champion is not None:
        champion_result = rescore_on(champion, test, prepared.vocab, eval_cfg, device)
    else:
        log.info("no champion yet: the challenger must beat the %r baseline", gate_cfg.baseline)
        baseline = baseline_bundle(prepared, gate_cfg, train_cfg, eval_cfg, run_dir)
        baseline_result = rescore_on(baseline, test, prepared.vocab, eval_cfg, device)
    return decide(challenger_result, champion_result, baseline_result, gate_cfg)
