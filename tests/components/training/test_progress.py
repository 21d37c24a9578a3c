"""Per-epoch progress: the history a run record keeps and the lines a user reads."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import pytest

from components.data.config import DataConfig
from components.data.prepare import prepare
from components.evaluation.config import EvalConfig
from components.models.config import ModelConfig
from components.training.config import TrainConfig
from components.training.progress import epoch_line, format_seconds
from components.training.trainer import progress_bar_wanted, train_model


def test_format_seconds_is_short_and_fixed() -> None:
    assert format_seconds(7.4) == "7s"
    assert format_seconds(185) == "3m05s"
    assert format_seconds(3720) == "1h02m"
    assert format_seconds(float("inf")) == "?"


def test_epoch_line_names_every_figure() -> None:
    entry = {
        "epoch": 3.0,
        "train_loss": 2.87123,
        "ndcg@10": 0.554,
        "hr@10": 0.78,
        "elapsed_s": 12.2,
        "cpu_s": 23.4,
        "eta_s": 48.0,
    }
    assert epoch_line(entry, 15, 10) == (
        "epoch 3/15 loss 2.8712 valid ndcg@10 0.5540 hr@10 0.7800 elapsed 12s cpu 23s eta<=48s"
    )


def test_no_progress_bar_when_stdout_is_not_a_terminal() -> None:
    # pytest captures stdout: this is the log-file / CI case
    assert not progress_bar_wanted(TrainConfig(progress_bar=True))
    assert not progress_bar_wanted(TrainConfig(progress_bar=False))


@pytest.mark.slow
def test_training_logs_one_line_per_epoch_and_records_loss(
    tiny_events: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prepared = prepare(tiny_events, DataConfig(max_len=20))
    cfg = TrainConfig(max_epochs=3, batch_size=64, lr=5e-3, patience=5, seed=0)
    model = ModelConfig(name="gru4rec", params={"hidden_size": 16})
    with caplog.at_level(logging.INFO, logger="components.training.progress"):
        result = train_model(prepared, model, cfg, EvalConfig(), tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "components.training.progress"]
    epoch_lines = [line for line in lines if " valid ndcg@10 " in line]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    assert all(" loss " in line and " elapsed " in line for line in epoch_lines)
    assert "eta<=" in epoch_lines[0]
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0]
    losses = [h["train_loss"] for h in result.history]
    assert all(math.isfinite(x) and x > 0 for x in losses)
    assert losses[-1] < losses[0]  # it learns
    assert all(h["elapsed_s"] > 0 for h in result.history)
    cpu = [h["cpu_s"] for h in result.history]
    assert 0 < cpu[0] < cpu[1] < cpu[2]  # this process's CPU time, growing
    # the line is the record: same numbers
    last = result.history[-1]
    assert f"valid ndcg@10 {last['ndcg@10']:.4f}" in epoch_lines[-1]
    assert f"loss {last['train_loss']:.4f}" in epoch_lines[-1]
