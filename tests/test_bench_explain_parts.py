"""The pieces behind `recops bench explain`'s faithfulness figures (no training)."""

from __future__ import annotations

import fcntl
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.common import measurement_lock
from benchmarks.explain import (
    baseline_orders,
    eligible_rows,
    faithfulness,
    format_tables,
    ranked_positions,
    run_explain_benchmark,
    without_events,
)
from components.data.sequences import Vocabulary
from components.errors import ConfigError
from components.explain.influence import Question, deletion_influence
from components.models.bundle import ModelBundle
from tests.components.explain.test_influence import _SumModel


def test_without_events_removes_positions_and_left_pads() -> None:
    row = without_events(torch.tensor([5, 6, 7, 8]), [0, 2], width=5)
    assert row.tolist() == [0, 0, 0, 6, 8]


def test_ranked_positions_and_baselines() -> None:
    values = np.array([0.1, 0.9, -0.2, 0.5, 0.3, 0.9])
    assert ranked_positions(values) == [5, 1, 3, 4, 0, 2]  # ties: most recent first
    orders = baseline_orders(6, np.random.default_rng(0))
    assert orders["recent"] == [5, 4, 3, 2, 1, 0]
    assert sorted(orders["random"]) == list(range(6))


def test_eligible_rows_need_enough_history() -> None:
    histories = torch.tensor([[0, 0, 1], [1, 2, 3], [0, 4, 5]])
    assert eligible_rows(histories, 2, 10, 0).tolist() == [1, 2]


def test_on_an_additive_model_deletion_is_the_best_deletion() -> None:
    """Single-event influence is exact for a model whose score is a sum over events:
    deleting its top m events drops the target at least as much as any other method's,
    and Shapley values equal the single drops (no interaction)."""
    model = _SumModel()
    vocab = Vocabulary(users=("u",), items=tuple(f"i{i}" for i in range(1, 7)))
    bundle = ModelBundle(model, vocab, "sum-test", {}, 8, np.ones(7))
    histories = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6], [0, 3, 1, 4, 1, 5, 6, 2]])
    figures = faithfulness(bundle, histories, seed=0)
    assert figures["users"] == 2
    methods = figures["methods"]
    assert set(methods) == {"deletion", "group", "beam", "search", "shapley", "recent", "random"}
    for other in ("recent", "random", "group", "shapley"):
        for m in range(5):
            best = methods["deletion"]["mean_score_drop"][m]
            assert best >= methods[other]["mean_score_drop"][m] - 1e-5
    assert methods["shapley"]["mean_score_drop"] == methods["deletion"]["mean_score_drop"]
    assert methods["recent"]["ties_recent3_share"] == 1.0
    assert methods["random"]["ties_random3_share"] == 1.0
    # additive: the most damaging triple is the top 3 single drops, in the same order
    assert np.allclose(
        methods["search"]["mean_score_drop"], methods["deletion"]["mean_score_drop"], atol=1e-5
    )
    search = methods["search"]
    assert search["beats_recent3_share"] + search["ties_recent3_share"] == 1.0
    row = {"data": "d", "model": "sum-test", "epochs": 1, "max_epochs": 1, "test_ndcg@10": 0.0}
    table = format_tables({"faithfulness": [{**row, **figures}], "latency": []})
    assert "shapley" in table and "AOPC" in table


def test_measurement_lock_is_held_while_measuring(tmp_path: Path) -> None:
    path = tmp_path / "bench.lock"
    with measurement_lock(path) as load, path.open("a") as other:
        assert len(load.split(" / ")) == 3
        with pytest.raises(BlockingIOError):  # a second measurement would wait
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with path.open("a") as other:  # released afterwards
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _latency_row(model: str, explain: bool, p50: float) -> dict[str, object]:
    return {
        "model": model,
        "target": "bento",
        "explain": explain,
        "explain_max_history": 50,
        "concurrency": 1,
        "requests": 10,
        "errors": 0,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "cpu_ms": p50 / 4,
    }


def test_latency_tables_are_one_per_model_with_their_own_ratios() -> None:
    setups = [
        {"model": m, "data": "d", "n_items": 9, "history_length": 50, "k": 10}
        for m in ("sasrec", "lrurec")
    ]
    rows = [
        _latency_row("sasrec", False, 10.0),
        _latency_row("sasrec", True, 15.0),
        _latency_row("lrurec", False, 4.0),
        _latency_row("lrurec", True, 12.0),
    ]
    table = format_tables({"faithfulness": [], "latency": rows, "latency_setup": setups})
    sasrec, lrurec = table.split("latency: ")[1:]
    assert sasrec.startswith("sasrec") and "1.50" in sasrec and "3.00" not in sasrec
    assert lrurec.startswith("lrurec") and "3.00" in lrurec and "1.50" not in lrurec
    explained = [line.split() for line in lrurec.splitlines() if " True " in line]
    assert explained[0][-2:] == ["3.00", "3.00"]  # CPU per request 3.00 ms, 3x the plain 1.00


def test_latency_of_a_model_not_benchmarked_is_refused_before_any_training() -> None:
    with pytest.raises(ConfigError, match="gru4rec"):
        run_explain_benchmark(
            [(Path("unused.txt"), "auto")],
            ["sasrec"],
            max_epochs=1,
            users=1,
            min_history=4,
            seed=0,
            levels=[1],
            duration=1.0,
            latency=True,
            explain_histories=[50],
            overrides=[],
            progress=print,
            latency_models=["gru4rec"],
        )


def test_capped_deletion_explains_only_the_most_recent_events() -> None:
    """deletion@H ranks only the H most recent events: with H at least the history it is
    deletion itself; with a smaller H its top 3 can only drop the score less on an
    additive model, and the share of users whose top 3 reach further back is reported."""
    model = _SumModel()
    vocab = Vocabulary(users=("u",), items=tuple(f"i{i}" for i in range(1, 7)))
    bundle = ModelBundle(model, vocab, "sum-test", {}, 8, np.ones(7))
    histories = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6], [0, 6, 5, 4, 3, 2, 1, 1]])
    methods = faithfulness(bundle, histories, seed=0, caps=[3, 8])["methods"]
    assert methods["deletion@8"]["mean_score_drop"] == methods["deletion"]["mean_score_drop"]
    assert methods["deletion@8"]["top3_beyond_cap_share"] == 0.0
    capped, full = methods["deletion@3"], methods["deletion"]
    assert capped["mean_score_drop"][2] <= full["mean_score_drop"][2] + 1e-6
    assert capped["ties_recent3_share"] == 1.0  # capped at 3, its top 3 are the recent 3
    # independently: whose 3 largest single drops include one of its older events
    top1, _ = bundle.recommend(histories, 1, exclude_seen=True)
    older = []
    for row, target in zip(histories, top1, strict=True):
        history = row[row != 0]
        (found,) = deletion_influence(model, [Question(history, target)], 8, 8)
        top3 = found.top_events(0, 3)
        older.append(min(top3) < len(history) - 3)
    assert any(older)  # the cap hides some user's influential events (not a vacuous check)
    assert capped["top3_beyond_cap_share"] == sum(older) / len(older)
