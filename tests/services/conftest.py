"""Fixtures for serving tests: a real workspace with registered models and Feast features.

``served_workspace`` (module-scoped) builds tiny synthetic events, registers two untrained
SASRec bundles (v1 champion, v2 candidate) in the real registry, and writes, applies and
materializes the Feast feature tables, so the bento reads real online features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.data.config import SyntheticConfig
from components.data.sequences import Vocabulary, build_sequences
from components.data.synthetic import generate_events
from components.features.config import FeaturesConfig
from components.features.store import refresh_features
from components.models.bundle import ModelBundle, build_model
from components.records import RunRecord
from components.registry.store import ModelRegistry, ModelVersion
from components.workspace import Workspace

PARAMS = {"hidden_size": 16, "num_layers": 1, "num_heads": 1}
MAX_LEN = 20


@dataclass
class ServedWorkspace:
    workspace: Workspace
    events: pd.DataFrame
    v1: ModelVersion
    v2: ModelVersion
    features: FeaturesConfig


def make_bundle(events: pd.DataFrame, seed: int, params: dict | None = None) -> ModelBundle:
    """An untrained SASRec bundle (``params``: default PARAMS) over ``events``' vocabulary."""
    params = params or PARAMS
    torch.manual_seed(seed)
    vocab = Vocabulary.from_events(events)
    seqs = build_sequences(events, vocab)
    model = build_model("sasrec", params, vocab.n_items, vocab.n_users, MAX_LEN)
    popularity = np.bincount(seqs.values, minlength=vocab.n_items + 1).astype(np.float64)
    return ModelBundle(model, vocab, "sasrec", params, MAX_LEN, popularity)


def register_bundle(
    registry: ModelRegistry, bundle: ModelBundle, run_id: str, ndcg: float = 0.1
) -> ModelVersion:
    """Register ``bundle`` with a minimal run record (test NDCG@10 ``ndcg``)."""
    record = RunRecord(
        run_id=run_id,
        model_name=bundle.model_name,
        config={},
        config_hash="test",
        code_rev="test",
        data_version="data-v1",
        metrics_test={"ndcg@10": ndcg},
    )
    return registry.register(bundle, record)


def register(registry: ModelRegistry, events: pd.DataFrame, seed: int, ndcg: float) -> ModelVersion:
    return register_bundle(registry, make_bundle(events, seed), f"run-{seed}", ndcg)


def build_served_workspace(root: Path) -> ServedWorkspace:
    ws = Workspace.at(root).activate()
    events = generate_events(SyntheticConfig(n_users=60, n_items=40, n_events=1500, seed=3))
    registry = ModelRegistry(ws)
    v1 = register(registry, events, seed=1, ndcg=0.11)
    registry.promote(v1.version, actor="test", reason="first champion")
    v2 = register(registry, events, seed=2, ndcg=0.12)
    features = FeaturesConfig()
    refresh_features(events, ws, features)
    return ServedWorkspace(ws, events, registry.get(v1.version), v2, features)


@pytest.fixture(scope="module")
def served_workspace(tmp_path_factory: pytest.TempPathFactory) -> ServedWorkspace:
    return build_served_workspace(tmp_path_factory.mktemp("serving-ws"))
