"""Approximate top-k (FAISS HNSW): recall against the exact search on a synthetic item
table, and the served path on a real SASRec: exact scores, exclusions honoured."""

from __future__ import annotations

import numpy as np
import torch

from components.data.sequences import PAD
from components.models.ann import AnnIndex, ann_recommend, build_index, supports_ann, write_index
from components.models.bundle import build_model

PARAMS = {"hidden_size": 32, "num_layers": 1, "num_heads": 1}


def _clustered_table(n: int, dim: int, seed: int) -> np.ndarray:
    """Items around 200 topics (real item tables are clustered, not uniform noise)."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(200, dim))
    rows = topics[rng.integers(0, 200, n)] + 0.5 * rng.normal(size=(n, dim))
    return rows.astype(np.float32)


def test_recall_at_10_against_the_exact_search_on_a_synthetic_table() -> None:
    table = _clustered_table(20_000, 32, seed=0)
    queries = _clustered_table(200, 32, seed=1)
    ann = AnnIndex(build_index(table), nprobe=32)
    found = ann.candidates(queries, 10)
    exact = np.argsort(-(queries @ table.T), axis=1)[:, :10] + 1  # 1-based item indices
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])
    assert recall >= 0.9, recall
    assert (found != PAD).all()
    narrow = AnnIndex(ann.index, nprobe=1).candidates(queries, 10)  # fewer cells: worse
    assert np.mean([len(set(f) & set(e)) / 10 for f, e in zip(narrow, exact, strict=True)]) < recall


def test_served_top_k_is_exactly_scored_and_honours_exclusions(tmp_path) -> None:
    torch.manual_seed(0)
    n_items = 3000
    model = build_model("sasrec", PARAMS, n_items, 1, 20).eval()
    assert supports_ann(model)
    assert write_index(model, tmp_path) is not None
    ann = AnnIndex.load(tmp_path, nprobe=32)
    assert ann is not None
    histories = torch.tensor([[0, 0, 5, 9, 11], [0, 0, 0, 0, 42], [1, 2, 3, 4, 5]])
    exclude = torch.tensor([[5, 9, 11, 0], [42, 0, 0, 0], [1, 2, 3, 77]])
    items, scores = ann_recommend(model, ann, histories, 10, exclude)
    with torch.no_grad():
        exact = model.score_all(histories)
    for row in range(3):
        banned = set(exclude[row].tolist()) | {PAD}
        assert not banned & set(items[row].tolist())
        assert len(set(items[row].tolist())) == 10
        torch.testing.assert_close(scores[row], exact[row, items[row]])
        ranked = exact[row].clone()
        ranked[list(banned)] = float("-inf")
        best = set(ranked.topk(10).indices.tolist())
        assert len(best & set(items[row].tolist())) >= 8  # approximate, close to exact


def test_the_auto_index_is_built_only_from_its_catalogue_size(tmp_path) -> None:
    """``serve.ann: auto`` decides from the bundle's recorded size (no model load below the
    threshold) and builds the index at or above it; ``off`` never builds one."""
    from components.data.sequences import Vocabulary
    from components.deploy.bento import add_ann_index, bundle_items
    from components.models.ann import INDEX_FILE
    from components.models.bundle import ModelBundle

    n_items = 300
    vocab = Vocabulary(users=("u0",), items=tuple(f"i{j}" for j in range(n_items)))
    model = build_model("sasrec", PARAMS, n_items, 1, 20)
    ModelBundle(model, vocab, "sasrec", PARAMS, 20, np.zeros(n_items + 1)).save(tmp_path)
    assert bundle_items(tmp_path) == n_items
    add_ann_index(tmp_path, "auto", n_items + 1)
    add_ann_index(tmp_path, "off", 0)
    assert not (tmp_path / INDEX_FILE).exists()
    add_ann_index(tmp_path, "auto", n_items)
    assert AnnIndex.load(tmp_path, nprobe=8) is not None
    assert bundle_items(tmp_path / "missing") == 0
