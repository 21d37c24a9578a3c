"""Registry fixtures: a tiny saved torch model and run records."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.data.sequences import Vocabulary
from components.records import RunRecord
from components.registry.store import ModelRegistry
from components.workspace import Workspace


class TinyBundle:
    """The part of ModelBundle the registry relies on when storing: ``save(directory)``."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(4, 6)
        self.vocab = Vocabulary(users=("u1", "u2"), items=("a", "b", "c", "d", "e"))
        self.model_name = "tiny"

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        torch.save(self.model.state_dict(), directory / "weights.pt")
        self.vocab.save(directory / "vocab.json")


def make_record(i: int, model_name: str = "sasrec", ndcg: float = 0.1) -> RunRecord:
    return RunRecord(
        run_id=f"run-{i}",
        model_name=model_name,
        config={"model": {"name": model_name}},
        config_hash=f"hash{i}",
        code_rev="abc123",
        data_version=f"data-{i}",
        train_seconds=1.5,
        epochs=3,
        metrics_valid={"ndcg@10": ndcg + 0.01},
        metrics_test={"ndcg@10": ndcg, "hr@10": 2 * ndcg},
    )


@pytest.fixture
def registry(workspace: Workspace) -> ModelRegistry:
    return ModelRegistry(workspace)


def register_n(registry: ModelRegistry, n: int) -> list[str]:
    """Register ``n`` tiny models; their versions, oldest first."""
    return [
        registry.register(TinyBundle(i), make_record(i, ndcg=0.1 * (i + 1))).version
        for i in range(n)
    ]
