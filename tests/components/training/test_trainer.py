"""train_model end to end on tiny synthetic data with sequential structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.data.config import DataConfig
from components.data.prepare import PreparedData, prepare
from components.errors import ConfigError, TrainingError
from components.evaluation.config import EvalConfig
from components.models.bundle import ModelBundle
from components.models.config import ModelConfig
from components.training.config import TrainConfig, validation_interval
from components.training.datamodules import training_kind
from components.training.trainer import train_model

FAST = TrainConfig(
    max_epochs=4,
    batch_size=32,
    lr=5e-3,
    patience=3,
    progress_bar=False,
    seed=0,
    val_every_steps=None,  # these tests count validations in epochs
)


@pytest.fixture(scope="module")
def prepared(tiny_events: pd.DataFrame) -> PreparedData:
    return prepare(tiny_events, DataConfig(max_len=20))


@pytest.fixture(scope="module")
def pop_result(prepared: PreparedData, tmp_path_factory: pytest.TempPathFactory):
    return train_model(
        prepared, ModelConfig(name="pop"), FAST, EvalConfig(), tmp_path_factory.mktemp("pop")
    )


@pytest.mark.slow
def test_trained_sasrec_beats_pop_and_restores_its_best_epoch(
    prepared: PreparedData, pop_result, tmp_path: Path
) -> None:
    params = {"hidden_size": 32, "num_layers": 1, "dropout": 0.2}
    result = train_model(
        prepared, ModelConfig(name="sasrec", params=params), FAST, EvalConfig(), tmp_path
    )
    assert result.metrics_test["ndcg@10"] > 1.5 * pop_result.metrics_test["ndcg@10"]
    assert result.epochs == 4 and len(result.history) == 4
    assert result.best_checkpoint is not None and result.best_checkpoint.exists()
    # the bundle holds the best epoch's weights: its valid NDCG@10 is the best seen
    best_seen = max(h["ndcg@10"] for h in result.history)
    assert result.metrics_valid["ndcg@10"] == pytest.approx(best_seen, abs=1e-6)
    assert result.samples_per_second > 0 and result.train_seconds > 0
    assert set(result.per_user_test) >= {"hr@10", "ndcg@10", "mrr"}
    assert len(result.per_user_test["ndcg@10"]) == len(prepared.split.test)
    reloaded = ModelBundle.load(result.bundle_dir)
    histories = prepared.split.test.histories[:16]
    assert torch.allclose(reloaded.score(histories), result.bundle.score(histories))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("bsarec", {"hidden_size": 32, "num_layers": 1, "dropout": 0.2, "attn_dropout": 0.2}),
        ("lrurec", {"hidden_size": 32, "num_layers": 1, "dropout": 0.2, "recurrent_dropout": 0.2}),
    ],
)
def test_new_sequence_models_beat_pop_through_the_trainer(
    name: str, params: dict, prepared: PreparedData, pop_result, tmp_path: Path
) -> None:
    result = train_model(
        prepared, ModelConfig(name=name, params=params), FAST, EvalConfig(), tmp_path
    )
    assert result.metrics_test["ndcg@10"] > 1.5 * pop_result.metrics_test["ndcg@10"]


@pytest.mark.slow
def test_reference_bsarec_recipe_beats_pop_through_the_trainer(
    prepared: PreparedData, pop_result, tmp_path: Path
) -> None:
    """BSARec's whole-window filter trained the reference's way: every prefix its own
    example, the loss at its last position (``train.samples: prefixes``)."""
    params = {"hidden_size": 32, "num_layers": 1, "dropout": 0.2, "attn_dropout": 0.2}
    params |= {"filter": "window", "positions_from": "last"}
    cfg = FAST.model_copy(update={"samples": "prefixes"})
    result = train_model(
        prepared, ModelConfig(name="bsarec", params=params), cfg, EvalConfig(), tmp_path
    )
    assert result.metrics_test["ndcg@10"] > 1.5 * pop_result.metrics_test["ndcg@10"]


def test_prefix_samples_need_a_causal_model() -> None:
    assert training_kind("causal", "prefixes") == "session_graph"
    assert training_kind("causal", "positions") == "causal"
    assert training_kind("session_graph", "prefixes") == "session_graph"
    with pytest.raises(TrainingError, match="needs a causal model"):
        training_kind("masked", "prefixes")


def test_auto_validation_interval_follows_the_data_size() -> None:
    auto = TrainConfig(max_epochs=200)
    assert auto.val_every_steps == "auto"
    assert validation_interval(auto, steps_per_epoch=350) is None  # Beauty: every epoch
    assert validation_interval(auto, steps_per_epoch=15) == 100  # ml-100k: every 100 steps
    short = TrainConfig(max_epochs=4)
    assert validation_interval(short, steps_per_epoch=3) is None  # a short run still validates
    assert validation_interval(TrainConfig(max_epochs=20), steps_per_epoch=3) == 6
    assert validation_interval(TrainConfig(val_every_steps=7), steps_per_epoch=3) == 7
    assert validation_interval(TrainConfig(val_every_steps=None), steps_per_epoch=3) is None


def test_auto_validation_spaces_validations_by_steps_on_small_data(
    prepared: PreparedData, tmp_path: Path
) -> None:
    batch_size = 150  # 2 steps per epoch
    steps_per_epoch = -(-len(prepared.split.train) // batch_size)
    cfg = FAST.model_copy(
        update={
            "batch_size": batch_size,
            "max_epochs": 20,
            "patience": 50,
            "val_every_steps": "auto",
            "val_min_steps": 2 * steps_per_epoch,
        }
    )
    params = {"embedding_size": 16, "hidden_size": 16}
    result = train_model(
        prepared, ModelConfig(name="gru4rec", params=params), cfg, EvalConfig(), tmp_path
    )
    epochs = [h["epoch"] for h in result.history]
    assert len(epochs) == 10, epochs  # every second epoch, not every epoch


def test_non_neural_models_fit_without_epochs(
    prepared: PreparedData, pop_result, tmp_path: Path
) -> None:
    knn = train_model(prepared, ModelConfig(name="itemknn"), FAST, EvalConfig(), tmp_path)
    assert knn.epochs == 0 and pop_result.epochs == 0
    assert knn.metrics_test["ndcg@10"] > pop_result.metrics_test["ndcg@10"]
    assert (knn.bundle_dir / "weights.pt").exists()


def test_exclude_seen_is_applied_and_reported(prepared: PreparedData, tmp_path: Path) -> None:
    kept = train_model(
        prepared, ModelConfig(name="pop"), FAST, EvalConfig(exclude_seen=False), tmp_path / "a"
    )
    excluded = train_model(
        prepared, ModelConfig(name="pop"), FAST, EvalConfig(exclude_seen=True), tmp_path / "b"
    )
    assert excluded.exclude_seen and not kept.exclude_seen
    assert excluded.metrics_test["ndcg@10"] != kept.metrics_test["ndcg@10"]


def test_bad_model_config_is_a_config_error(prepared: PreparedData, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_layer"):
        train_model(
            prepared,
            ModelConfig(name="sasrec", params={"num_layer": 2}),
            FAST,
            EvalConfig(),
            tmp_path,
        )


def test_seeded_runs_are_reproducible(prepared: PreparedData, tmp_path: Path) -> None:
    cfg = FAST.model_copy(update={"max_epochs": 1})
    params = {"embedding_size": 16, "hidden_size": 16}
    a = train_model(
        prepared, ModelConfig(name="gru4rec", params=params), cfg, EvalConfig(), tmp_path / "a"
    )
    b = train_model(
        prepared, ModelConfig(name="gru4rec", params=params), cfg, EvalConfig(), tmp_path / "b"
    )
    np.testing.assert_allclose(a.per_user_test["mrr"], b.per_user_test["mrr"], rtol=1e-5)


def test_learning_rate_decays_on_a_validation_plateau(
    prepared: PreparedData, tmp_path: Path
) -> None:
    cfg = FAST.model_copy(
        update={"max_epochs": 3, "lr": 1e-7, "lr_decay_factor": 0.5, "lr_decay_patience": 1}
    )
    # nothing may learn at lr 1e-7 (the seen-item offset moves 10x faster than weights)
    params = {"embedding_size": 16, "hidden_size": 16, "seen_bias": False}
    result = train_model(
        prepared, ModelConfig(name="gru4rec", params=params), cfg, EvalConfig(), tmp_path
    )
    assert result.epochs == 3
    lrs = pd.read_csv(tmp_path / "logs" / "metrics.csv")["lr-Adam"].dropna().tolist()
    assert lrs[0] == pytest.approx(1e-7) and lrs[-1] < lrs[0]


def test_early_stopping_waits_for_min_steps(prepared: PreparedData, tmp_path: Path) -> None:
    # at lr 1e-7 nothing improves, so patience 1 alone stops after the second epoch
    cfg = FAST.model_copy(
        update={"max_epochs": 20, "lr": 1e-7, "patience": 1, "lr_decay_factor": None}
    )
    params = {"embedding_size": 16, "hidden_size": 16, "seen_bias": False}
    quick = train_model(
        prepared, ModelConfig(name="gru4rec", params=params), cfg, EvalConfig(), tmp_path / "a"
    )
    steps_per_epoch = -(-len(prepared.split.train) // cfg.batch_size)
    floor = cfg.model_copy(update={"min_steps": 5 * steps_per_epoch})
    held = train_model(
        prepared, ModelConfig(name="gru4rec", params=params), floor, EvalConfig(), tmp_path / "b"
    )
    assert quick.epochs <= 3
    assert held.epochs >= 5


def test_validation_every_n_steps_drives_stopping_and_lr_decay(
    prepared: PreparedData, tmp_path: Path
) -> None:
    steps_per_epoch = -(-len(prepared.split.train) // FAST.batch_size)
    every = max(1, steps_per_epoch // 2)  # about two validations per epoch
    cfg = FAST.model_copy(
        update={
            "max_epochs": 3,
            "lr": 1e-7,
            "lr_decay_factor": 0.5,
            "lr_decay_patience": 1,
            "patience": 50,
            "val_every_steps": every,
        }
    )
    params = {"embedding_size": 16, "hidden_size": 16, "seen_bias": False}
    result = train_model(
        prepared, ModelConfig(name="gru4rec", params=params), cfg, EvalConfig(), tmp_path
    )
    assert len(result.history) >= 2 * 3 - 1  # validations happen inside epochs, not once per epoch
    lrs = pd.read_csv(tmp_path / "logs" / "metrics.csv")["lr-Adam"].dropna().tolist()
    # more than one decay per epoch (epoch-wise plateau checks allow at most 2 in 3 epochs)
    assert lrs[-1] < 0.99 * lrs[0] / 4
