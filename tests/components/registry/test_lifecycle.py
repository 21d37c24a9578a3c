"""Real training on tiny synthetic data: register, gate against pop/champion, promote,
reject, roll back, and load the stored bundles back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from components.data.config import DataConfig
from components.data.prepare import PreparedData, prepare
from components.evaluation.config import EvalConfig, GateConfig
from components.evaluation.gate import decide, rescore_on
from components.models.config import ModelConfig
from components.records import RunRecord
from components.registry.changes import apply_gate, rollback_champion
from components.registry.store import ModelRegistry
from components.training.config import TrainConfig
from components.training.trainer import TrainResult, train_model

pytestmark = pytest.mark.slow

EVAL = EvalConfig(ks=[10])
TRAIN = TrainConfig(progress_bar=False, batch_size=64, max_epochs=4, lr=3e-3)
SASREC = ModelConfig(name="sasrec", params={"hidden_size": 32, "num_layers": 1, "dropout": 0.2})


@pytest.fixture(scope="module")
def prepared(tiny_events: pd.DataFrame) -> PreparedData:
    return prepare(tiny_events, DataConfig(max_len=20))


def train(prepared: PreparedData, cfg: ModelConfig, run_dir: Path) -> TrainResult:
    return train_model(prepared, cfg, TRAIN, EVAL, run_dir)


@pytest.fixture(scope="module")
def trained(prepared: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("runs")
    return {
        "pop": train(prepared, ModelConfig(name="pop"), root / "pop"),
        "pop_again": train(prepared, ModelConfig(name="pop"), root / "pop2"),
        "sasrec": train(prepared, SASREC, root / "sasrec"),
    }


def record_of(result: TrainResult, name: str, data_version: str) -> RunRecord:
    return RunRecord(
        run_id=f"run-{name}-{data_version}",
        model_name=result.bundle.model_name,
        config={"model": {"name": result.bundle.model_name, "params": result.bundle.params}},
        config_hash=name,
        code_rev="test",
        data_version=data_version,
        train_seconds=result.train_seconds,
        epochs=result.epochs,
        metrics_valid=result.metrics_valid,
        metrics_test=result.metrics_test,
    )


def test_first_model_beats_pop_then_equal_and_worse_are_rejected(
    prepared: PreparedData, trained: dict, registry: ModelRegistry
) -> None:
    test, vocab = prepared.split.test, prepared.vocab
    pop = rescore_on(trained["pop"].bundle, test, vocab, EVAL)

    # first model ever: sasrec against the pop baseline on the same split
    sasrec_v = registry.register(trained["sasrec"].bundle, record_of(trained["sasrec"], "s", "d1"))
    first = decide(rescore_on(trained["sasrec"].bundle, test, vocab, EVAL), None, pop, GateConfig())
    assert first.promote, first.table()
    assert first.reference == "baseline" and first.p_value < 0.01
    assert apply_gate(registry, sasrec_v.version, first, actor="test").after == sasrec_v.version

    # the champion is re-scored from the registry's stored copy, not by its old numbers
    champion = registry.load_bundle(registry.champion().version)
    champion_now = rescore_on(champion, test, vocab, EVAL)
    assert champion_now.summary["ndcg@10"] == pytest.approx(
        trained["sasrec"].metrics_test["ndcg@10"]
    )

    # a worse challenger (pop) is rejected with reasons on every rule it breaks
    worse = decide(pop, champion_now, None, GateConfig())
    assert not worse.promote
    failed = {c.name for c in worse.checks if not c.passed}
    assert {"primary", "significance", "guardrail:hr@10"} <= failed
    pop_v = registry.register(trained["pop"].bundle, record_of(trained["pop"], "p", "d1"))
    change = apply_gate(registry, pop_v.version, worse, actor="test")
    assert not change.changed and registry.get(pop_v.version).status == "rejected"
    assert "does not improve" in registry.get(pop_v.version).record.gate["reasons"][0]

    # an equal challenger (pop retrained: identical scores) does not replace pop either
    equal = decide(
        rescore_on(trained["pop_again"].bundle, test, vocab, EVAL), None, pop, GateConfig()
    )
    assert not equal.promote and equal.p_value == 1.0
    assert any("does not improve" in r for r in equal.reasons)


def test_old_champion_with_other_vocab_is_rescored_and_rolled_back(
    prepared: PreparedData,
    trained: dict,
    registry: ModelRegistry,
    tiny_events: pd.DataFrame,
    tmp_path: Path,
) -> None:
    # yesterday's champion: pop trained on data that lacked some items and users
    items = sorted(tiny_events["item_id"].astype(str).unique())
    old_events = tiny_events[~tiny_events["item_id"].astype(str).isin(items[:10])]
    old_events = old_events[
        old_events["user_id"].astype(str) != str(tiny_events["user_id"].iloc[0])
    ]
    old = train(
        prepare(old_events, DataConfig(max_len=20)), ModelConfig(name="pop"), tmp_path / "old"
    )
    old_v = registry.register(old.bundle, record_of(old, "old", "d0"))
    registry.promote(old_v.version, actor="test", reason="bootstrap")

    champion = rescore_on(
        registry.load_bundle(old_v.version), prepared.split.test, prepared.vocab, EVAL
    )
    assert champion.summary["unknown_targets"] > 0
    assert champion.summary["unknown_users"] >= 1
    challenger = rescore_on(trained["sasrec"].bundle, prepared.split.test, prepared.vocab, EVAL)
    decision = decide(challenger, champion, None, GateConfig())
    assert decision.promote, decision.table()
    assert decision.champion_unknown_targets == int(champion.summary["unknown_targets"])
    assert "champion vocabulary misses" in decision.table()

    new_v = registry.register(trained["sasrec"].bundle, record_of(trained["sasrec"], "s", "d1"))
    apply_gate(registry, new_v.version, decision, actor="flow:retrain")
    assert registry.champion().version == new_v.version

    back = rollback_champion(registry, actor="ops", reason="bad online metrics")
    assert (back.before, back.after) == (new_v.version, old_v.version)
    restored = registry.load_bundle(registry.champion().version)
    histories = prepared.split.test.histories[:5]
    assert torch.equal(restored.score(histories), old.bundle.score(histories))
    actions = [e.action for e in registry.history()]
    assert actions == ["register", "manual_promote", "register", "promote", "rollback"]
