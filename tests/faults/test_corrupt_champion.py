"""A champion whose stored weights are corrupt must not block retraining."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.data.config import DataConfig, SyntheticConfig
from components.data.prepare import prepare
from components.data.synthetic import generate_events
from components.errors import RegistryError
from components.evaluation.config import EvalConfig, GateConfig
from components.lifecycle.challenge import challenge
from components.registry.store import ModelRegistry
from components.training.config import TrainConfig
from components.workspace import Workspace
from tests.services.conftest import make_bundle, register

pytestmark = pytest.mark.faults


def test_the_gate_goes_on_against_the_baseline_and_says_why(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws").activate()
    events = generate_events(SyntheticConfig(n_users=60, n_items=40, n_events=1500, seed=3))
    registry = ModelRegistry(ws)
    champion = register(registry, events, seed=1, ndcg=0.1)
    registry.promote(champion.version, actor="test", reason="first")
    Path(champion.path, "weights.pt").write_bytes(b"\x80not a checkpoint")

    with pytest.raises(RegistryError, match="cannot be loaded") as err:
        registry.load_bundle(champion.version)
    assert "\n" not in str(err.value)  # one line, not an unpickling traceback
    version, bundle, error = registry.champion_bundle()
    assert (version, bundle) == (champion.version, None) and "cannot be loaded" in str(error)

    prepared = prepare(events, DataConfig(max_len=20))
    decision = challenge(
        prepared,
        make_bundle(events, seed=2),
        None,
        gate_cfg=GateConfig(test="none"),
        eval_cfg=EvalConfig(),
        train_cfg=TrainConfig(max_epochs=1, accelerator="cpu", progress_bar=False),
        run_dir=tmp_path / "run",
        champion_error=error,
    )
    assert decision.reference == "baseline" and decision.baseline is not None
    assert decision.champion_error == error
    assert "champion not compared" in decision.table()
