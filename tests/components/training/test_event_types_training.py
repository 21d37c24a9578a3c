"""A sequence model with ``event_types: true`` is trained on and scored with each event's type."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.data.config import DataConfig, SyntheticConfig
from components.data.prepare import PreparedData, prepare
from components.data.synthetic import generate_events
from components.evaluation.config import EvalConfig
from components.evaluation.metrics import evaluate
from components.lifecycle.train import record_breakdowns
from components.models.bundle import ModelBundle
from components.models.config import ModelConfig
from components.training.config import TrainConfig
from components.training.datamodules import RecDataModule
from components.training.trainer import build_bundle, train_model

PARAMS = {"hidden_size": 16, "num_layers": 1, "dropout": 0.1, "event_types": True}
FAST = TrainConfig(max_epochs=2, batch_size=32, lr=5e-3, progress_bar=False, seed=0)


@pytest.fixture(scope="module")
def prepared() -> PreparedData:
    cfg = SyntheticConfig(n_users=60, n_items=40, n_events=1200, funnel=True, seed=4)
    return prepare(generate_events(cfg), DataConfig(max_len=12))


def test_training_batches_carry_the_input_events_types(prepared: PreparedData) -> None:
    split = prepared.split
    data = RecDataModule("causal", split.train, split.valid, split.max_len, 16, 16, seed=0)
    batch = data.train_data[list(range(16))]
    assert batch["input_events"].shape == batch["inputs"].shape
    assert bool(((batch["input_events"] == 0) == (batch["inputs"] == 0)).all())
    masked = RecDataModule("masked", split.train, split.valid, split.max_len, 16, 16, seed=0)
    assert masked.train_data[[0, 1]]["events"].shape == masked.train_data[[0, 1]]["sequences"].shape
    assert "events" in data.valid_data[[0, 1, 2]]


def test_event_type_embedding_is_trained_used_and_saved(
    prepared: PreparedData, tmp_path: Path
) -> None:
    untrained = build_bundle(prepared, ModelConfig(name="sasrec", params=PARAMS))
    start = untrained.model.item_input.event_emb.weight.detach().clone()
    result = train_model(
        prepared, ModelConfig(name="sasrec", params=PARAMS), FAST, EvalConfig(), tmp_path
    )
    bundle = result.bundle
    assert bundle.params["n_event_types"] == 3 and bundle.uses_events
    emb = bundle.model.item_input.event_emb.weight.detach()
    assert emb.shape[0] == 4 and not torch.allclose(emb[1:], start[1:])  # trained
    test = prepared.split.test
    with_types = bundle.score(test.histories[:8], None, test.events[:8])
    without = bundle.score(test.histories[:8])
    assert not torch.allclose(with_types[:, 1:], without[:, 1:])  # read at scoring time
    # evaluation passes the history types (the metrics match a scorer that is given them)
    plain = evaluate(lambda h, u: bundle.score(h, u), test, ks=[10])
    typed = evaluate(bundle, test, ks=[10])
    assert typed.summary["mrr"] == pytest.approx(result.metrics_test["mrr"])
    assert typed.summary["mrr"] != pytest.approx(plain.summary["mrr"])
    loaded = ModelBundle.load(result.bundle_dir)
    assert loaded.vocab.event_types == prepared.vocab.event_types
    assert torch.equal(loaded.score(test.histories[:8], None, test.events[:8]), with_types)


def test_run_record_breaks_test_metrics_down_by_target_event_type(
    prepared: PreparedData, tmp_path: Path
) -> None:
    result = train_model(prepared, ModelConfig(name="pop"), FAST, EvalConfig(), tmp_path)
    rows = record_breakdowns(prepared, result)["event_type"]
    assert {r["bucket"] for r in rows} <= {"cart", "purchase", "view"}
    assert sum(r["n_users"] for r in rows) == len(prepared.split.test)
    overall = sum(r["n_users"] * r["metrics"]["hr@10"] for r in rows) / len(prepared.split.test)
    assert overall == pytest.approx(result.metrics_test["hr@10"])
