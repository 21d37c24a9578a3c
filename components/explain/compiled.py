"""The exact one-event deletion encodings run by ONNX Runtime (the explanation path's
compiled form).

An explanation's cost is the model's :meth:`~components.models.base.Recommender.
encode_deletions` shortcut (components/models/prefix.py: the history and its ``E``
one-event deletions, by prefix reuse), and at serving sizes that is, beside the
arithmetic of the suffix rows' feed-forward, a hundred-odd small dispatched torch ops.
The same computation recorded into one ONNX graph (every dimension dynamic: questions,
history length, deleted events) and run by ONNX Runtime's CPU session, as the plain path
runs its ranking (components/models/onnx_scorer.py, whose exporter options, session
options and graph fix-up this reuses), fuses and dispatches them in C++: measured on a
Beauty SASRec (64 wide, 2 blocks), a 50-event history and its 50 deletions, one thread,
4.2-4.7 ms eager against 2.7 ms here (8 histories: 33-36 ms against 23 ms).

A recording only stands for the inputs it was checked on, so, as the plain path's:

* recording must emit no ``TracerWarning`` (a tensor value read back into Python would
  be frozen);
* on probes of several batch sizes, history lengths and numbers of deleted events, its
  encodings must equal the eager shortcut's within
  :data:`components.models.compiled.TOLERANCE` of their magnitude.

Otherwise (no shortcut, an op the exporter cannot record, a model off the CPU, no
``onnxruntime``) the eager shortcut is used and :attr:`DeletionEncoder.reason` says why.

The graph is exported and checked once, when the model version is registered
(:func:`store_deletion_graph`, called by the registry beside the serving graph's
:func:`components.models.onnx_scorer.store_graph`, through the same stored-graph record:
the weights' digest, or the refusal), and written beside the weights as
:data:`GRAPH_FILE`. A process opens it at its first explanation and checks it again on
the probes; only a bundle without a stored graph for these weights (one built in memory,
or registered before this) exports it there (1.3-2.7 s for that SASRec on this shared
machine). Neither happens on the plain path's start-up or switch-over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from components.models.base import Recommender
from components.models.compiled import TOLERANCE, Unservable

log = logging.getLogger(__name__)

#: (histories, events in each, events deleted: the most recent ones) of the probes; the
#: graph is recorded on the first (no dimension 1, fewer deletions than events)
PROBES = ((2, 12, 5), (1, 50, 50), (1, 7, 7), (3, 20, 20), (1, 50, 20), (2, 2, 2))

#: the deletion graph and its record, beside a registered model's weights
#: (:func:`store_deletion_graph`; the serving graph's are ``serving.onnx`` / ``.json``)
GRAPH_FILE = "deletions.onnx"
RECORD_FILE = "deletions.json"

#: ``run(histories [Q, n], positions [E], events [Q, n] | None) -> [Q, E + 1, D]``
DeletionRun = Callable[[Tensor, Tensor, "Tensor | None"], np.ndarray]


class EncodeDeletions(nn.Module):
    """``model.encode_deletions`` with tensor-only arguments (what an export records)."""

    def __init__(self, model: Recommender, with_events: bool) -> None:
        super().__init__()
        self.model = model
        self.with_events = with_events

    def forward(self, histories: Tensor, positions: Tensor, events: Tensor | None = None) -> Tensor:
        found = self.model.encode_deletions(
            histories, positions, events if self.with_events else None
        )
        if found is None:
            raise Unservable(f"{type(self.model).__name__} has no exact deletion shortcut")
        return found


@dataclass
class DeletionEncoder:
    """``encoder(histories [Q, n], positions [E], events) -> [Q, E + 1, D] | None``, as
    the model's own :meth:`~components.models.base.Recommender.encode_deletions` computes
    it: through the checked ONNX graph once :meth:`prepare` has one, else eagerly."""

    model: Recommender
    with_events: bool
    #: the registered model's folder, where :func:`store_deletion_graph` wrote the graph
    #: (None, or no graph there for these weights: it is exported at :meth:`prepare`)
    stored: Path | None = None
    run: DeletionRun | None = None
    reason: str = "not prepared yet: eager"
    prepared: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def prepare(self) -> DeletionEncoder:
        """Open the stored graph, or export one, and check it (once; thread-safe)."""
        with self._lock:
            if not self.prepared:
                self.run, self.reason = _compiled(self.model, self.with_events, self.stored)
                self.prepared = True
        return self

    def __call__(
        self, histories: Tensor, positions: Tensor, events: Tensor | None = None
    ) -> Tensor | None:
        run = self.prepare().run
        usable = (
            run is not None
            and histories.device.type == "cpu"
            and histories.shape[1] >= 2
            and positions.numel() > 0
            and (events is not None or not self.with_events)
        )
        if not usable or run is None:
            return self.model.encode_deletions(histories, positions, events)
        return torch.from_numpy(run(histories, positions, events))


def deletion_graph(model: Recommender, with_events: bool) -> bytes:
    """The ONNX graph of :class:`EncodeDeletions` over ``model`` (eval mode), every
    dimension dynamic, fixed up for ONNX Runtime's CPU kernels."""
    from components.models.onnx_scorer import ort_compatible, record_graph

    inputs = _probe(model, *PROBES[0], with_events)
    names = ["histories", "positions", "events"][: len(inputs)]
    dynamic = {
        "histories": {0: "questions", 1: "length"},
        "positions": {0: "deleted"},
        "events": {0: "questions", 1: "length"},
        "states": {0: "questions", 1: "rows"},
    }
    graph = record_graph(EncodeDeletions(model, with_events), inputs, names, ["states"], dynamic)
    return ort_compatible(graph)


def mismatch(model: Recommender, run: DeletionRun, with_events: bool) -> str | None:
    """Why ``run`` does not stand for ``model.encode_deletions`` on the probes (None when
    it does): every encoding within :data:`TOLERANCE` of the largest one's magnitude."""
    with torch.no_grad():
        for shape in PROBES:
            questions, length, deleted = shape
            length = min(length, model.max_len)
            histories, positions, *events = _probe(
                model, questions, length, min(deleted, length), with_events
            )
            kinds = events[0] if events else None
            want = model.encode_deletions(histories, positions, kinds)
            if want is None:
                return f"{type(model).__name__} has no exact deletion shortcut"
            got = run(histories, positions, kinds)
            expected = want.float().numpy()
            if got.shape != expected.shape:
                return f"a {shape} probe gives shape {got.shape}, not {expected.shape}"
            worst = float(np.abs(got - expected).max(initial=0.0))
            if worst > TOLERANCE * (1.0 + float(np.abs(expected).max(initial=0.0))):
                return f"a {shape} probe's encodings differ by {worst:.2e}"
    return None


def _probe(
    model: Recommender, questions: int, length: int, deleted: int, with_events: bool
) -> tuple[Tensor, ...]:
    """Histories of real items (one repeated), the ``deleted`` most recent positions, and
    event types "none" where the model reads them (what the service sends without any)."""
    generator = torch.Generator().manual_seed(questions * 1000 + length)
    histories = torch.randint(1, model.n_items + 1, (questions, length), generator=generator)
    if length > 2:
        histories[:, -1] = histories[:, 0]
    positions = torch.arange(length - deleted, length)
    head = (histories, positions)
    return (*head, torch.zeros_like(histories)) if with_events else head


def store_deletion_graph(model: Recommender, with_events: bool, directory: Path) -> str | None:
    """Export ``model``'s deletion graph once, check it on the probes, and write it
    (:data:`GRAPH_FILE`) with its record (:data:`RECORD_FILE`: the weights' digest, or why
    the model is explained eagerly) into ``directory``, so serving opens it instead of
    exporting at its first explanation. Returns the refusal (None when the graph was
    written); writes nothing without ONNX Runtime or for a model off the CPU."""
    from components.models.onnx_scorer import write_stored

    if _device(model) != "cpu":
        return "the model is not on the CPU"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed"
    training = model.training
    model.eval()
    try:
        graph, _, refused = _checked(model, with_events, None)
    finally:
        model.train(training)
    write_stored(directory, model, with_events, graph, refused, (GRAPH_FILE, RECORD_FILE))
    return refused


def _device(model: Recommender) -> str:
    return next(iter(model.parameters()), torch.empty(0)).device.type


def _compiled(
    model: Recommender, with_events: bool, stored: Path | None = None
) -> tuple[DeletionRun | None, str]:
    """``(run, reason)``: the checked graph's call (the one stored in ``stored`` for these
    weights, else one exported now), or None and why not."""
    if _device(model) != "cpu":
        return None, "eager: ONNX Runtime here has no GPU provider"
    from components.models.onnx_scorer import stored_graph

    note = " (graph stored at registration)"
    try:
        graph = stored_graph(model, with_events, stored, (GRAPH_FILE, RECORD_FILE))
    except Unservable as exc:  # refused when registered: explained eagerly, no export
        return _refused(model, str(exc))
    if graph is None:
        note = " (graph exported at the first explanation)"
    _, run, refused = _checked(model, with_events, graph)
    if run is None or refused is not None:
        return _refused(model, refused or "no graph")
    return run, f"onnx{note}"


def _checked(
    model: Recommender, with_events: bool, graph: bytes | None
) -> tuple[bytes, DeletionRun | None, str | None]:
    """``(graph, run, refusal)``: ``graph`` (exported now when None), its session's call,
    and why it does not stand for ``model``'s shortcut on the probes (None when it does)."""
    try:
        if graph is None:
            graph = deletion_graph(model, with_events)
        run = _session_run(graph, torch.get_num_threads(), with_events)
        return graph, run, mismatch(model, run, with_events)
    except Unservable as exc:
        return graph or b"", None, str(exc)
    except Exception as exc:  # a model the exporter cannot record: explained eagerly
        return graph or b"", None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"


def _refused(model: Recommender, refused: str) -> tuple[None, str]:
    log.warning("explaining %s eagerly: %s", type(model).__name__, refused)
    return None, f"eager: {refused}"


def _session_run(graph: bytes, threads: int, with_events: bool) -> DeletionRun:
    """An ONNX Runtime session of ``graph`` as a call on CPU tensors (numpy views)."""
    import onnxruntime

    from components.models.onnx_scorer import _options

    session = onnxruntime.InferenceSession(
        graph, _options(onnxruntime, threads), providers=["CPUExecutionProvider"]
    )

    def run(histories: Tensor, positions: Tensor, events: Tensor | None) -> np.ndarray:
        feed = {"histories": histories.numpy(), "positions": positions.numpy()}
        if with_events:
            assert events is not None
            feed["events"] = events.numpy()
        (states,) = session.run(None, feed)
        return np.asarray(states)

    return run
