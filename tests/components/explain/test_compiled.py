"""The explanation path's ONNX deletion graph stands for the model's own deletion shortcut,
and falls back to it where it cannot."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from components.explain import compiled
from components.explain.compiled import DeletionEncoder, store_deletion_graph
from components.explain.influence import Question, deletion_influence
from components.models.base import Recommender
from components.models.zoo import get_model_class

N_ITEMS, WIDTH = 300, 12


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as serving runs (``serve.cpu_threads``), restored afterwards: two
    threads spin on each other on a loaded 2-core machine (0.36 s for a 3 ms encoding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(name: str, **params: Any) -> Recommender:
    torch.manual_seed(0)
    cls = get_model_class(name)
    model = cls(cls.Params(**params), N_ITEMS, 0, WIDTH)
    with torch.no_grad():  # a learned seen-item offset, so the offsets are exercised
        assert model.seen_bias_raw is not None
        model.seen_bias_raw.fill_(-0.3)
    return model.eval()


@pytest.mark.parametrize(
    "params", [{}, {"norm_first": True, "num_layers": 3, "event_types": True, "n_event_types": 3}]
)
def test_the_graph_equals_the_eager_shortcut_on_unseen_shapes(params: dict[str, Any]) -> None:
    """Histories of lengths and deletion counts the graph was neither recorded nor
    checked on (8 and 3 of 11; the longest with 1 deletion) give the eager encodings."""
    model = _model("sasrec", **params)
    with_events = bool(params.get("event_types"))
    encoder = DeletionEncoder(model, with_events).prepare()
    assert encoder.reason.startswith("onnx") and encoder.run is not None
    generator = torch.Generator().manual_seed(3)
    for questions, length, deleted in [(4, 8, 3), (1, 11, 11), (2, WIDTH, 1)]:
        histories = torch.randint(1, N_ITEMS + 1, (questions, length), generator=generator)
        events = torch.randint(1, 4, (questions, length), generator=generator)
        kinds = events if with_events else None
        positions = torch.arange(length - deleted, length)
        with torch.no_grad():
            want = model.encode_deletions(histories, positions, kinds)
        got = encoder(histories, positions, kinds)
        assert want is not None and got is not None and got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())


def test_explanations_through_the_graph_equal_the_eager_ones() -> None:
    """Drops, ranks and listed rank changes: the same answer either way."""
    model = _model("sasrec")
    history = torch.randint(1, N_ITEMS + 1, (WIDTH,), generator=torch.Generator().manual_seed(4))
    questions = [Question(history, torch.tensor([7, 42, history[-1].item()]))] * 2
    encoder = DeletionEncoder(model, False)
    compiled = deletion_influence(model, questions, WIDTH, WIDTH, listed=3, deletions=encoder)
    assert encoder.reason == "onnx (graph exported at the first explanation)"
    eager = deletion_influence(model, questions, WIDTH, WIDTH, listed=3)
    for got, want in zip(compiled, eager, strict=True):
        assert torch.allclose(got.drops, want.drops, atol=1e-5)
        assert torch.equal(got.ranks, want.ranks)
        assert torch.equal(got.rank_changes, want.rank_changes)


def test_without_a_shortcut_or_off_its_shapes_the_model_answers_itself() -> None:
    """No exact shortcut (positions counted from the last event): the graph is refused and
    the model's own hook (None: re-encode the variants) answers; a one-event history or no
    deletion never reaches the graph."""
    refused = DeletionEncoder(_model("sasrec", positions_from="last"), False).prepare()
    assert refused.run is None and refused.reason.startswith("eager: ")
    assert "no exact deletion shortcut" in refused.reason
    assert refused(torch.tensor([[5, 9, 2]]), torch.arange(3)) is None
    model = _model("sasrec")
    encoder = DeletionEncoder(model, False).prepare()
    assert encoder.run is not None
    assert encoder(torch.tensor([[5]]), torch.arange(1)) is None  # as the model's own hook
    with torch.no_grad():
        want = model.encode_deletions(torch.tensor([[5, 9, 2]]), torch.arange(0))
    got = encoder(torch.tensor([[5, 9, 2]]), torch.arange(0))
    assert want is not None and got is not None and torch.equal(got, want)


def _no_export(*args: Any, **kwargs: Any) -> bytes:
    raise AssertionError("the deletion graph was exported at the first explanation")


def test_the_graph_stored_at_registration_is_opened_not_exported(tmp_path, monkeypatch) -> None:
    """Registering a version writes its checked deletion graph beside the weights; the
    first explanation of the registered bundle opens it (no export) and explains as the
    model's own shortcut."""
    import numpy as np

    from components.data.sequences import Vocabulary
    from components.models.bundle import ModelBundle
    from components.records import RunRecord
    from components.registry.store import ModelRegistry
    from components.workspace import Workspace

    model = _model("sasrec").train()
    vocab = Vocabulary(users=("u0",), items=tuple(f"i{j}" for j in range(N_ITEMS)))
    bundle = ModelBundle(model, vocab, "sasrec", {}, WIDTH, np.ones(N_ITEMS + 1))
    record = RunRecord(run_id="r", model_name="sasrec", config={}, config_hash="h", code_rev="c")
    registry = ModelRegistry(Workspace.at(tmp_path / "ws"))
    version = registry.register(bundle, record).version
    assert model.training  # registering leaves the model as it was
    loaded = registry.load_bundle(version)
    assert loaded.source is not None and (loaded.source / compiled.GRAPH_FILE).is_file()
    monkeypatch.setattr(compiled, "deletion_graph", _no_export)
    encoder = DeletionEncoder(loaded.model.eval(), False, loaded.source).prepare()
    assert encoder.reason == "onnx (graph stored at registration)"
    history = torch.randint(1, N_ITEMS + 1, (WIDTH,), generator=torch.Generator().manual_seed(5))
    questions = [Question(history, torch.tensor([3, 77, int(history[0])]))]
    got = deletion_influence(loaded.model, questions, WIDTH, WIDTH, listed=3, deletions=encoder)
    want = deletion_influence(loaded.model, questions, WIDTH, WIDTH, listed=3)
    assert torch.allclose(got[0].drops, want[0].drops, atol=1e-5)
    assert torch.equal(got[0].rank_changes, want[0].rank_changes)


def test_a_stored_graph_of_other_weights_is_exported_again(tmp_path) -> None:
    assert store_deletion_graph(_model("sasrec"), False, tmp_path) is None
    torch.manual_seed(1)
    other = get_model_class("sasrec")
    served = other(other.Params(), N_ITEMS, 0, WIDTH).eval()
    encoder = DeletionEncoder(served, False, tmp_path).prepare()
    assert encoder.reason == "onnx (graph exported at the first explanation)"


def test_a_refusal_recorded_at_registration_is_final(tmp_path, monkeypatch) -> None:
    """A model without an exact shortcut is recorded as such when registered (no graph
    file) and explained eagerly at once, with no export at its first explanation."""
    model = _model("sasrec", positions_from="last")
    refused = str(store_deletion_graph(model, False, tmp_path))
    assert "no exact deletion shortcut" in refused
    assert not (tmp_path / compiled.GRAPH_FILE).exists()
    monkeypatch.setattr(compiled, "deletion_graph", _no_export)
    encoder = DeletionEncoder(model, False, tmp_path).prepare()
    assert encoder.run is None
    assert encoder.reason == f"eager: {refused} (checked at registration)"
