"""Evaluate: full-ranking metrics of any stored bundle on a split of the current data.

One policy for data the model's vocabulary does not know, shared with the gate
(:func:`components.evaluation.gate.rescore_on`): unknown history items are dropped,
unknown targets are misses, and users unknown to a model that embeds users are misses;
both counts are reported (``unknown_targets``, ``unknown_users``).
"""

from __future__ import annotations

from typing import Literal

from components.data.prepare import PreparedData
from components.evaluation.config import EvalConfig
from components.evaluation.gate import rescore_on
from components.evaluation.metrics import EvalResult
from components.models.bundle import ModelBundle

SplitName = Literal["test", "valid"]


def evaluate_bundle(
    bundle: ModelBundle,
    prepared: PreparedData,
    eval_cfg: EvalConfig,
    split: SplitName = "test",
    device: str = "cpu",
) -> EvalResult:
    """Metrics of ``bundle`` on ``prepared``'s ``split`` (see the module doc for unknowns)."""
    eval_set = prepared.split.test if split == "test" else prepared.split.valid
    return rescore_on(bundle, eval_set, prepared.vocab, eval_cfg, device)
