"""The serving path's model call: ``score_all`` and its top-k, run by ONNX Runtime or a
frozen trace.

At serving batch sizes (one to a few short histories) a model's forward pass is almost all
per-op overhead: Python, ``nn.Module`` calls and torch's dispatcher, not arithmetic. Two
compiled forms of the same computation remove it:

* ``onnx`` (components/models/onnx_scorer.py): exported to ONNX and run by ONNX Runtime's
  CPU session (one thread, graph optimisations on);
* ``traced``: a ``torch.jit.freeze(torch.jit.trace(...))``, run by TorchScript's
  interpreter with the weights and the cached item table as constants.

What is recorded is :class:`RankAll`: the model's ``score_all`` followed by the ranking
every top-k in recops applies (components/models/ranking.py: bans, padding, ``-inf``),
so one call returns the ``[B, k]`` answer: the catalogue-wide scores never come back to
Python, and the dozen small torch ops of the ranking run inside the compiled graph. ``k``
is read from an input's shape, so one graph serves every ``k``.

Measured on the bench's SASRec (64 wide, 2 blocks, a 3-item history, 12,101 items, one
thread, medians of 3,000 calls, load ~1): ``score_all`` 790 us eager, 330 us frozen trace,
140-160 us ONNX Runtime. ``optimize_for_inference`` on the trace gains 4 % and moves
scores by 1.2e-7, so it is not taken. The ONNX session's scores differ from the model's by
float32 rounding (2e-7 here: ONNX Runtime fuses LayerNorm/attention and reorders sums).

A compiled form records one run, so it is only kept when it can stand for every input:

* recording must emit no ``TracerWarning``: a tensor read back into Python (``int(t)``,
  ``bool(t)``, iterating a tensor) would be frozen at its recorded value;
* on probe histories of several batch sizes and lengths, with and without padding, its
  top-k must be the eager model's and its scores within :data:`TOLERANCE`.

``serve.scorer`` names the form wanted; one that does not check out falls back to the
next (``onnx`` -> ``traced`` -> ``eager``), and :attr:`ServingScorer.reason` says why.
``torch.jit`` is deprecated in favour of ``torch.compile``/``torch.export``; neither runs
without Python per-op overhead on a CPU without a C compiler at start-up, so the trace
stays as the fallback, and a torch without ``torch.jit`` falls back to eager.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from components.models.base import Recommender
from components.models.ranking import rank_top_k

log = logging.getLogger(__name__)

#: what ``serve.scorer`` may name, fastest first (each falls back to the next)
ScorerKind = Literal["onnx", "traced", "eager"]
FALLBACK: tuple[ScorerKind, ...] = ("onnx", "traced", "eager")
#: Largest accepted |compiled - eager| score difference, relative to the scores' magnitude
#: (1 + max |score|): float32 rounding of a reordered sum is ~1e-7 of it.
TOLERANCE = 1e-5
#: (batch, length) of the histories a compiled form is checked on; it is recorded on the
#: first (one 3-item history, the common request)
PROBE_SHAPES = ((1, 3), (1, 1), (2, 7), (5, 2))
PROBE_K = 10

#: ``run(histories [B, L], exclude [B, E], k, events [B, L] | None) -> (items, scores)``,
#: both ``[B, k]`` numpy arrays, as :func:`eager_top_k` computes them
RankCall = Callable[[Tensor, Tensor, int, "Tensor | None"], "tuple[np.ndarray, np.ndarray]"]


class RankAll(nn.Module):
    """``model.score_all`` then :func:`rank_top_k`, with tensor-only arguments (what a
    trace or an export records); ``k`` is ``width``'s length, so it stays an input."""

    def __init__(self, model: Recommender, with_events: bool) -> None:
        super().__init__()
        self.model = model
        self.with_events = with_events

    def forward(
        self, histories: Tensor, exclude: Tensor, width: Tensor, events: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        scores = self.model.score_all(histories, None, events if self.with_events else None)
        return rank_top_k(scores.float(), exclude, width.shape[0])


class Unservable(Exception):
    """This compiled form cannot stand for the model (the message says why)."""


def eager_top_k(
    model: Recommender, histories: Tensor, exclude: Tensor, k: int, events: Tensor | None
) -> tuple[np.ndarray, np.ndarray]:
    """The reference answer: the model's own ``score_all`` and :func:`rank_top_k`."""
    scores = model.score_all(histories, None, events).float()
    items, top = rank_top_k(scores, exclude, k)
    return items.cpu().numpy(), top.cpu().numpy()


@dataclass
class ServingScorer:
    """``scorer.top_k(histories [B, L], exclude [B, E], k, events [B, L] | None)`` ->
    ``(items [B, k], scores [B, k])``, as :func:`eager_top_k` computes them (users are not
    served). Inputs are CPU tensors (moved to :attr:`device` here); rows must hold at least
    one item: an empty history is a cold start, answered from popularity before the model
    is called."""

    model: Recommender
    with_events: bool
    device: torch.device = torch.device("cpu")
    run: RankCall | None = None  # the compiled call; None: the model itself
    kind: ScorerKind = "eager"  # what ``/metadata`` reports, with :attr:`reason`
    reason: str = "serve.scorer is eager"

    def top_k(
        self, histories: Tensor, exclude: Tensor, k: int, events: Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.with_events:
            events = None
        elif events is None:  # the model reads event types: "none" for every position
            events = torch.zeros_like(histories)
        if self.kind == "onnx":  # numpy in, numpy out: no torch op, no grad mode to set
            assert self.run is not None
            return self.run(histories, exclude, k, events)
        with torch.inference_mode():
            device = self.device
            histories, exclude = histories.to(device), exclude.to(device)
            events = events.to(device) if events is not None else None
            if self.run is None:
                return eager_top_k(self.model, histories, exclude, k, events)
            return self.run(histories, exclude, k, events)


def serving_scorer(
    model: Recommender,
    kind: ScorerKind,
    with_events: bool,
    device: torch.device,
    stored: Path | None = None,
) -> ServingScorer:
    """The fastest form from ``kind`` down (:data:`FALLBACK`) that stands for ``model``
    (eval mode, on ``device``, where its weights are); each refusal is logged and named
    in the scorer's :attr:`~ServingScorer.reason`. ``stored``: the model's registered
    folder, whose ONNX graph (written once at registration,
    :func:`components.models.onnx_scorer.store_graph`) is opened instead of exporting one
    when it was recorded from these weights."""
    scorer = ServingScorer(model, with_events, device)
    if kind == "eager":
        return scorer
    model.eval()
    fill_eval_caches(model, with_events, device)
    refused: list[str] = []
    for candidate in FALLBACK[FALLBACK.index(kind) :]:
        if candidate == "eager":
            break
        note = ""
        try:
            run, note = _compile(model, candidate, with_events, device, stored)
            found = mismatch(model, run, with_events, device)
        except Unservable as exc:
            found = str(exc)
        except Exception as exc:  # a model the compiler cannot record: try the next form
            found = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        if found is None:
            if candidate == "onnx":
                from components.models.onnx_scorer import arm

                arm(run)  # single requests may build fixed-shape sessions from now on
            scorer.run, scorer.kind = run, candidate
            scorer.reason = "; ".join([*refused, f"{candidate}{note}"])
            return scorer
        refused.append(f"not {candidate}: {found}")
        log.warning("not serving %s as %s: %s", type(model).__name__, candidate, found)
    scorer.reason = "; ".join(refused)
    return scorer


def fill_eval_caches(model: Recommender, with_events: bool, device: torch.device) -> None:
    """One eval-mode call under ``no_grad``: the model's eval caches (its item table,
    LightGCN's propagation) are filled, so a recording holds them as constants, not their
    computation."""
    with torch.no_grad():
        warm = probe(model, *PROBE_SHAPES[0], seed=0, device=device)
        model.score_all(warm.histories, None, warm.events if with_events else None)


def _compile(
    model: Recommender,
    kind: ScorerKind,
    with_events: bool,
    device: torch.device,
    stored: Path | None,
) -> tuple[RankCall, str]:
    """The compiled call and a note on where it came from (for the scorer's reason)."""
    if kind == "onnx":
        from components.models.onnx_scorer import onnx_call  # onnxruntime only when asked

        return onnx_call(model, with_events, device, stored)
    return _traced_call(_frozen_trace(model, with_events, device), with_events), ""


def _traced_call(traced: torch.jit.ScriptModule, with_events: bool) -> RankCall:
    widths: dict[int, Tensor] = {}  # k -> a [k] tensor (its shape is the trace's k)

    def run(
        histories: Tensor, exclude: Tensor, k: int, events: Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        width = widths.get(k)
        if width is None:
            width = widths[k] = torch.empty(k, dtype=torch.int64, device=histories.device)
        inputs = (histories, exclude, width, events) if with_events else (histories, exclude, width)
        items, scores = traced(*inputs)
        return items.cpu().numpy(), scores.cpu().numpy()

    return run


def probe(model: Recommender, batch: int, length: int, seed: int, device: torch.device) -> Probe:
    """Histories of real items (the first row left padded when it is long enough), event
    types, and per row a few banned items (padded with 0, as the service pads them), on
    ``device``."""
    generator = torch.Generator().manual_seed(seed)
    histories = torch.randint(1, model.n_items + 1, (batch, length), generator=generator)
    if length > 2:  # a repeated item (the seen-item offset counts it once)
        histories[:, -1] = histories[:, 0]
    if length > 1:
        histories[0, : length // 2] = 0
    events = torch.zeros_like(histories)
    exclude = torch.randint(1, model.n_items + 1, (batch, 1 + seed % 3), generator=generator)
    exclude[0, 1:] = 0
    return Probe(histories.to(device), exclude.to(device), events.to(device))


@dataclass
class Probe:
    """One probe's inputs."""

    histories: Tensor
    exclude: Tensor
    events: Tensor

    def inputs(self, k: int, with_events: bool) -> tuple[Tensor, ...]:
        """:class:`RankAll`'s arguments for top-``k``."""
        width = torch.empty(k, dtype=torch.int64, device=self.histories.device)
        head = (self.histories, self.exclude, width)
        return (*head, self.events) if with_events else head


def probe_k(model: Recommender) -> int:
    """The ``k`` the probes rank (and a compiled form is recorded with)."""
    return min(PROBE_K, model.n_items)


#: (file, message start) of tracer warnings that do not change what a recording computes:
#: ``nn.GRU``/``nn.LSTM`` compare their input's and state's sizes with the module's in
#: Python only to raise on a misshapen input (``check_input``, ``check_hidden_size``)
BENIGN_TRACER_WARNINGS = (("torch/nn/modules/rnn.py", "Converting a tensor to a Python boolean"),)


def raise_on_tracer_warning(caught: list[warnings.WarningMessage]) -> None:
    """:class:`Unservable` when recording read a tensor value back into Python (apart from
    :data:`BENIGN_TRACER_WARNINGS`; the probes check the recording either way)."""
    tracer = [
        w
        for w in caught
        if issubclass(w.category, torch.jit.TracerWarning)
        and not any(
            w.filename.endswith(where) and str(w.message).startswith(message)
            for where, message in BENIGN_TRACER_WARNINGS
        )
    ]
    if tracer:
        where = f"{tracer[0].filename.rsplit('/', 1)[-1]}:{tracer[0].lineno}"
        raise Unservable(f"the trace reads tensor values in Python ({where})")


def _frozen_trace(
    model: Recommender, with_events: bool, device: torch.device
) -> torch.jit.ScriptModule:
    module = RankAll(model, with_events).eval()
    inputs = probe(model, *PROBE_SHAPES[0], seed=0, device=device).inputs(
        probe_k(model), with_events
    )
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        traced = torch.jit.freeze(torch.jit.trace(module, inputs, check_trace=False))
    raise_on_tracer_warning(caught)
    return traced


def mismatch(
    model: Recommender, run: RankCall, with_events: bool, device: torch.device
) -> str | None:
    """Why ``run`` does not stand for ``model`` on the probes (None when it does): its
    top-k must be the model's, with scores within :data:`TOLERANCE`, for ``k`` of 1 and
    :func:`probe_k` (a deeper top-k would compare the order of near-ties, which float32
    rounding may swap)."""
    with torch.inference_mode():
        for seed, (batch, length) in enumerate(PROBE_SHAPES):
            p = probe(model, batch, length, seed, device)
            events = p.events if with_events else None
            for k in sorted({1, probe_k(model)}):
                want_items, want = eager_top_k(model, p.histories, p.exclude, k, events)
                got_items, got = run(p.histories, p.exclude, k, events)
                differs = answer_differs(want_items, want, got_items, got)
                if differs is not None:
                    return f"top-{k} of a {batch}x{length} probe: {differs}"
    return None


def answer_differs(
    want_items: np.ndarray, want: np.ndarray, got_items: np.ndarray, got: np.ndarray
) -> str | None:
    """Why a top-k answer ``(got_items, got)`` is not ``(want_items, want)`` (None when it
    is): the same items in the same order, the same banned (non-finite) scores, and the
    other scores within :data:`TOLERANCE` of the largest one's magnitude."""
    if not np.array_equal(got_items, want_items):
        return "the items differ"
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)):
        return "banned items differ"
    scale = 1.0 + float(np.abs(want[finite]).max(initial=0.0))
    worst = float(np.abs(got[finite] - want[finite]).max(initial=0.0))
    if worst > TOLERANCE * scale:
        return f"scores differ by {worst:.2e}"
    return None
