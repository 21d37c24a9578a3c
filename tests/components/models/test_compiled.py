"""The serving scorer: ONNX Runtime or a frozen trace of ``score_all`` and its top-k, only
where it stands for every input; otherwise the model itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from components.models.base import mask_padding_column
from components.models.bundle import build_model
from components.models.compiled import TOLERANCE, ScorerKind, eager_top_k, serving_scorer
from components.models.onnx_scorer import store_graph
from components.models.pop import Pop

CPU = torch.device("cpu")
N_ITEMS = 30


def _histories(seed: int, batch: int, length: int) -> Tensor:
    """Histories unlike the scorer's own probes: other seeds, sizes, padding and repeats."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.randint(1, N_ITEMS + 1, (batch, length), generator=generator)
    out[0, : length - 1] = 0  # one real item
    out[-1, 1] = out[-1, -1]  # a repeat
    return out


def _exclude(seed: int, batch: int, width: int) -> Tensor:
    """Banned items per row, padded with 0 (the first row bans none)."""
    generator = torch.Generator().manual_seed(seed + 100)
    out = torch.randint(1, N_ITEMS + 1, (batch, width), generator=generator)
    out[0] = 0
    return out


def _assert_answers_as_the_model(
    model: torch.nn.Module, kind: ScorerKind, with_events: bool, stored: Path | None = None
) -> str:
    """The scorer's reason, once its answers are checked against the model's."""
    scorer = serving_scorer(model, kind, with_events, CPU, stored=stored)
    assert scorer.kind == kind, scorer.reason
    for seed, (batch, length, banned, k) in enumerate(
        [(1, 5, 1, 10), (3, 12, 4, 7), (4, 9, 2, N_ITEMS), (2, 4, 1, 1)]
    ):
        histories = _histories(seed + 10, batch, length)
        exclude = _exclude(seed, batch, banned)
        events = torch.randint(0, 4, histories.shape) if with_events else None
        with torch.inference_mode():
            want_items, want = eager_top_k(model, histories, exclude, k, events)
            got_items, got = scorer.top_k(histories, exclude, k, events)
        assert got_items.shape == (batch, k)
        top = min(k, 10)  # a deeper order compares near-ties that float rounding may swap
        assert np.array_equal(got_items[:, :top], want_items[:, :top])
        assert np.array_equal(np.isfinite(got), np.isfinite(want))  # banned: -inf, last
        scale = 1.0 + float(np.abs(want[np.isfinite(want)]).max())
        for row in range(batch):  # the same items, each with its own score
            wanted = dict(zip(want_items[row].tolist(), want[row].tolist(), strict=True))
            for item, score in zip(got_items[row].tolist(), got[row].tolist(), strict=True):
                assert score == pytest.approx(wanted[item], rel=0, abs=TOLERANCE * scale)
        assert not (got_items == 0).any()  # padding is never ranked
        for row in range(1, batch):  # banned items are never above an allowed one
            rank = {int(i): r for r, i in enumerate(got_items[row])}
            last_allowed = max(r for i, r in rank.items() if i not in exclude[row].tolist())
            assert all(rank[i] > last_allowed for i in exclude[row].tolist() if i in rank)
    return scorer.reason


@pytest.mark.parametrize("kind", ["onnx", "traced"])
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("sasrec", {}),
        ("sasrec", {"seen_recency": [1, 5]}),
        ("sasrec", {"event_types": True, "n_event_types": 3}),
        ("bsarec", {}),
        ("bert4rec", {}),
        # nn.GRU's shape checks are benign tracer warnings; the GRU itself records
        ("gru4rec", {}),
        # a fixed number of scan steps while recording (exact: the extra steps add zeros)
        ("lrurec", {}),
    ],
)
def test_a_compiled_model_answers_as_the_model_does(
    name: str, params: dict, kind: ScorerKind
) -> None:
    model = build_model(name, params, N_ITEMS, 4, 12).eval()
    _assert_answers_as_the_model(model, kind, bool(params.get("event_types")))


@pytest.mark.parametrize("kind", ["onnx", "traced"])
def test_lightgcn_is_compiled_from_its_propagated_tables(kind: ScorerKind) -> None:
    """Serving LightGCN is a fold-in and a matrix product over tables propagated once over
    its training graph (cached in eval mode): the compiled form answers as the model."""
    from components.data.sequences import Sequences

    model = build_model("lightgcn", {}, N_ITEMS, 4, 12)
    generator = np.random.default_rng(0)
    values = generator.integers(1, N_ITEMS + 1, 24)
    model.fit_data(Sequences(values, np.array([0, 5, 11, 20, 24])))
    model.eval()
    with torch.no_grad():  # the graph is used: propagation moves the item table
        assert not torch.equal(model.propagate()[1], model.embeddings.weight[4:])
    _assert_answers_as_the_model(model, kind, False)
    model.train()  # training drops the cached tables
    assert model._propagated is None


def test_the_fixed_step_scan_equals_the_scan_bit_for_bit() -> None:
    """LRURec's recording scans a fixed number of steps; the steps beyond the sequence's
    own add exact zeros."""
    from components.models.lrurec import parallel_scan

    generator = torch.Generator().manual_seed(0)
    lam = torch.rand(2, 6, generator=generator) * 0.9
    for length in (1, 2, 3, 7, 12):
        u = torch.randn(2, 3, length, 6, generator=generator)
        want = parallel_scan(u[0], u[1], lam[0], lam[1])
        got = parallel_scan(u[0], u[1], lam[0], lam[1], steps=4)
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


class _ReadsValues(Pop):
    """Scores by how many distinct items the history has, read back into Python."""

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        scores = super().score_all(histories, users, events)
        return mask_padding_column(scores * int(histories.unique().numel()))


def test_a_model_whose_recording_reads_tensor_values_is_served_eagerly() -> None:
    model = _ReadsValues(Pop.Params(), N_ITEMS, 4, 12)
    model.counts.copy_(torch.arange(N_ITEMS + 1, dtype=torch.float32))
    scorer = serving_scorer(model, "onnx", False, CPU)
    assert scorer.kind == "eager"
    assert "not onnx" in scorer.reason and "not traced" in scorer.reason
    assert "reads tensor values in Python" in scorer.reason
    histories, exclude = _histories(3, 3, 7), _exclude(3, 3, 2)
    with torch.inference_mode():
        got = scorer.top_k(histories, exclude, 5)
        want = eager_top_k(model, histories, exclude, 5, None)
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_eager_by_configuration_calls_the_model_itself() -> None:
    model = build_model("sasrec", {}, N_ITEMS, 4, 12).eval()
    scorer = serving_scorer(model, "eager", False, CPU)
    assert scorer.kind == "eager" and scorer.run is None
    assert "eager" in scorer.reason


def test_the_trace_is_the_fallback_where_onnx_runtime_cannot_serve(monkeypatch) -> None:
    """A machine without onnxruntime (or a CUDA device: the wheel is CPU only) serves the
    frozen trace, and /metadata's reason says why."""
    import builtins

    real_import = builtins.__import__

    def without_onnxruntime(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    model = build_model("sasrec", {}, N_ITEMS, 4, 12).eval()
    scorer = serving_scorer(model, "onnx", False, CPU)
    assert scorer.kind == "traced"
    assert scorer.reason.startswith("not onnx: onnxruntime is not installed")


class _ShapeBranching(Pop):
    """Scores one way for short histories and another for long ones, deciding by the
    history's width: a trace would freeze the traced width's branch."""

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        scores = super().score_all(histories, users, events)
        if histories.shape[1] > 4:
            scores = -scores
        return mask_padding_column(scores)


def test_a_compiled_form_that_does_not_hold_for_other_shapes_is_refused() -> None:
    model = _ShapeBranching(Pop.Params(), N_ITEMS, 4, 12)
    model.counts.copy_(torch.arange(N_ITEMS + 1, dtype=torch.float32))
    scorer = serving_scorer(model, "onnx", False, CPU)
    assert scorer.kind == "eager" and "not onnx" in scorer.reason and "not traced" in scorer.reason
    for length in (3, 7):  # both branches, as the model itself takes them
        histories, exclude = _histories(1, 2, length), _exclude(1, 2, 1)
        with torch.inference_mode():
            got = scorer.top_k(histories, exclude, 5)
            want = eager_top_k(model, histories, exclude, 5, None)
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def _no_export(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("exported at load")


def test_the_graph_stored_at_registration_is_opened_not_exported(tmp_path, monkeypatch) -> None:
    """Registering a version exports and checks its ONNX graph once; serving it opens that
    graph (no export on the switch-over path) and answers as the model."""
    from components.data.sequences import Vocabulary
    from components.models import onnx_scorer
    from components.models.bundle import ModelBundle
    from components.records import RunRecord
    from components.registry.store import ModelRegistry
    from components.workspace import Workspace

    model = build_model("sasrec", {}, N_ITEMS, 4, 12)
    vocab = Vocabulary(users=("u0",), items=tuple(f"i{j}" for j in range(N_ITEMS)))
    bundle = ModelBundle(model, vocab, "sasrec", {}, 12, np.ones(N_ITEMS + 1))
    record = RunRecord(
        run_id="r", model_name="sasrec", config={}, config_hash="h", code_rev="c", metrics_test={}
    )
    registry = ModelRegistry(Workspace.at(tmp_path / "ws"))
    version = registry.register(bundle, record).version
    assert model.training  # registering leaves the model as it was
    loaded = registry.load_bundle(version)
    assert loaded.source is not None and (loaded.source / onnx_scorer.GRAPH_FILE).is_file()
    monkeypatch.setattr(onnx_scorer, "export", _no_export)
    reason = _assert_answers_as_the_model(loaded.model, "onnx", False, loaded.source)
    assert reason == "onnx (graph stored at registration)"


def test_a_stored_graph_of_other_weights_is_exported_again(tmp_path) -> None:
    recorded = build_model("sasrec", {}, N_ITEMS, 4, 12)
    assert store_graph(recorded, False, tmp_path) is None
    torch.manual_seed(1)
    served = build_model("sasrec", {}, N_ITEMS, 4, 12).eval()
    reason = _assert_answers_as_the_model(served, "onnx", False, tmp_path)
    assert reason == "onnx (graph exported at load)"


def test_a_refusal_checked_at_registration_is_final(tmp_path, monkeypatch) -> None:
    """A model whose graph failed its check when registered is served by the trace at
    once: no second export at load."""
    from components.models import onnx_scorer

    model = _ShapeBranching(Pop.Params(), N_ITEMS, 4, 12)
    model.counts.copy_(torch.arange(N_ITEMS + 1, dtype=torch.float32))
    refused = str(store_graph(model, False, tmp_path))
    assert refused.startswith("the trace reads tensor values")
    assert not (tmp_path / onnx_scorer.GRAPH_FILE).exists()
    monkeypatch.setattr(onnx_scorer, "export", _no_export)
    scorer = serving_scorer(model, "onnx", False, CPU, stored=tmp_path)
    assert scorer.reason.startswith(f"not onnx: {refused} (checked at registration)")


def _twins(run: object) -> dict:
    from components.models import onnx_scorer

    static = onnx_scorer._STATIC[run]  # type: ignore[index]
    assert static is not None
    return static.sessions


def _until(condition, what: str, deadline_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {deadline_s} s: {what}"
        time.sleep(0.02)


def test_a_single_request_is_answered_by_a_checked_fixed_shape_session() -> None:
    """Single requests move to a fixed-shape ONNX session for their padded shape, built in
    the background and kept once it answers as the dynamic one; the load-time check's
    probes build none."""
    model = build_model("sasrec", {}, N_ITEMS, 4, 12).eval()
    scorer = serving_scorer(model, "onnx", False, CPU)
    assert _twins(scorer.run) == {}  # the probes built no twin
    histories, exclude = _histories(4, 1, 5), _exclude(4, 1, 2)
    want_items, want = scorer.top_k(histories, exclude, 7)  # dynamic, and offers the twin
    _until(lambda: _twins(scorer.run).get((8, 4, 7)) is not None, "a fixed-shape twin")
    with torch.inference_mode():
        got_items, got = scorer.top_k(histories, exclude, 7)
        eager_items, _ = eager_top_k(model, histories, exclude, 7, None)
    assert np.array_equal(got_items, want_items) and np.array_equal(got_items, eager_items)
    assert np.allclose(got, want, rtol=0, atol=TOLERANCE * (1 + np.abs(want).max()))
    assert list(_twins(scorer.run)) == [(8, 4, 7)]  # a batch of two stays dynamic
    scorer.top_k(_histories(5, 2, 5), _exclude(5, 2, 2), 7)
    assert list(_twins(scorer.run)) == [(8, 4, 7)]


def test_a_fixed_shape_session_that_answers_otherwise_is_not_kept() -> None:
    import onnxruntime

    from components.models.onnx_scorer import StaticShapes, export, ort_compatible

    other = build_model("sasrec", {}, N_ITEMS, 4, 12).eval()  # not the model answered for
    static = StaticShapes(ort_compatible(export(other, False)), onnxruntime, 1)
    static.armed = True
    model = build_model("sasrec", {}, N_ITEMS, 4, 12).eval()
    histories, exclude = _histories(6, 1, 3), _exclude(6, 1, 1)
    with torch.inference_mode():
        items, scores = eager_top_k(model, histories, exclude, 10, None)
    width = np.zeros(10, dtype=np.int64)
    feed = {"histories": histories.numpy(), "exclude": exclude.numpy(), "width": width}
    static.offer(feed, items, scores)
    _until(lambda: (4, 4, 10) in static.refused, "the twin's check")
    assert static.refused[(4, 4, 10)] == "differs" and static.sessions == {(4, 4, 10): None}
    assert static.run(feed) is None  # the dynamic session keeps answering this shape
