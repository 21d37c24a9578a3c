"""Evaluation protocol and champion/challenger gate settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    """Full-ranking evaluation: cut-offs and whether history items are excluded."""

    model_config = ConfigDict(extra="forbid")

    ks: list[int] = [5, 10, 20]
    exclude_seen: bool = False
    batch_size: int = Field(1024, ge=1)


class GateConfig(BaseModel):
    """When a challenger may replace the champion (see ``components.evaluation.gate``)."""

    model_config = ConfigDict(extra="forbid")

    primary_metric: str = "ndcg@10"
    #: the primary metric must improve by at least this much (and by more than 0)
    min_delta: float = Field(0.0, ge=0)
    delta_mode: Literal["absolute", "relative"] = "absolute"
    #: paired one-sided test over per-user values; "none" skips the significance rule
    test: Literal["bootstrap", "wilcoxon", "none"] = "bootstrap"
    alpha: float = Field(0.05, gt=0, lt=1)
    bootstrap_samples: int = Field(2000, ge=100)
    #: metric -> largest tolerated drop (absolute, or relative with guardrail_mode)
    guardrails: dict[str, float] = {"hr@10": 0.01, "mrr": 0.01, "coverage@10": 0.05}
    guardrail_mode: Literal["absolute", "relative"] = "absolute"
    #: model trained on the same split that the first model ever must beat
    baseline: str = "pop"
    seed: int = 0
