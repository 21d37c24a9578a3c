"""Mixed precision chosen by the hardware, and the exact top-k ranks validation uses."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from components.data.config import DataConfig
from components.data.prepare import prepare
from components.evaluation.config import EvalConfig
from components.evaluation.metrics import rank_of_targets
from components.models.config import ModelConfig
from components.training.config import (
    TrainConfig,
    cpu_has_native_bf16,
    resolved_precision,
)
from components.training.module import rank_within
from components.training.trainer import train_model


def _scores_with_ties(rows: int, items: int, seed: int) -> torch.Tensor:
    """Integer-valued scores (many ties), some items banned (-inf), column 0 padding."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (rows, items + 1), generator=generator).float()
    banned = torch.rand(rows, items + 1, generator=generator) < 0.2
    scores[banned] = float("-inf")
    scores[:, 0] = float("-inf")
    return scores


@pytest.mark.parametrize(("items", "k"), [(40, 1), (40, 5), (40, 10), (8, 10), (11, 10)])
def test_rank_within_is_the_full_rank_capped_at_k(items: int, k: int) -> None:
    scores = _scores_with_ties(64, items, seed=items * 100 + k)
    targets = torch.randint(1, items + 1, (64,), generator=torch.Generator().manual_seed(k))
    targets[:4] = 0  # no target: a miss
    rows = torch.arange(4, 12)
    scores[rows, targets[rows]] = 5.0  # ties with the best scores (or the best itself)
    scores[rows[:4], targets[rows[:4]]] = 9.0  # strictly first
    expected = rank_of_targets(scores, targets).clamp(max=k)
    assert torch.equal(rank_within(scores, targets, k), expected)
    if items > k:  # both branches of the top-(k+1) are exercised
        assert (expected < k).any() and (expected == k).any()


def test_auto_precision_reads_the_cpu_flags() -> None:
    with_bf16 = "processor : 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n"
    without = "processor : 0\nflags\t\t: fpu sse avx2 fma\n"
    assert cpu_has_native_bf16(with_bf16)
    assert cpu_has_native_bf16("flags : amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16(without)
    assert not cpu_has_native_bf16("")
    assert resolved_precision("32-true", on_gpu=False) == "32-true"
    assert resolved_precision("bf16-mixed", on_gpu=False) == "bf16-mixed"
    native = cpu_has_native_bf16()
    assert resolved_precision("auto", on_gpu=False) == ("bf16-mixed" if native else "32-true")


def test_auto_precision_trains_through_lightning(tiny_events: pd.DataFrame, tmp_path: Path) -> None:
    prepared = prepare(tiny_events, DataConfig(max_len=20))
    cfg = TrainConfig(
        max_epochs=1,
        batch_size=64,
        progress_bar=False,
        seed=0,
        val_every_steps=None,
        precision="auto",
    )
    params = {"hidden_size": 16, "num_layers": 1}
    result = train_model(
        prepared, ModelConfig(name="sasrec", params=params), cfg, EvalConfig(), tmp_path
    )
    assert len(result.history) == 1 and result.history[0]["ndcg@10"] > 0
    # the final evaluation is fp32 whatever the training precision
    assert next(result.bundle.model.parameters()).dtype == torch.float32
