"""The serving path's model call: a frozen TorchScript trace of ``score_all``.

At serving batch sizes (one to a few short histories) a model's forward pass is almost all
per-op overhead: Python, ``nn.Module`` calls and torch's dispatcher, not arithmetic. A
trace frozen with ``torch.jit.freeze`` runs the same aten ops from TorchScript's
interpreter, with the weights and the cached item table folded in as constants. Measured
on the bench's SASRec (64 wide, 2 blocks, a 3-item history, one thread, medians of 3,000
calls, load ~7): ``score_all`` 677 us eager, 318 us frozen, 306 us with
``optimize_for_inference`` on top. That last step fuses ops (scores moved by up to
1.2e-7) for 4 % more, so it is not taken: the frozen trace is the same computation, and on
every probe here its scores equal the eager model's bit for bit.

A trace records one run, so it is only kept when it can stand for every input:

* tracing must emit no ``TracerWarning``: a tensor read back into Python (``int(t)``,
  ``bool(t)``, iterating a tensor) would be frozen at its traced value. GRU4Rec (packed
  sequences) and LRURec (a scan over the length) read lengths that way and stay eager;
  SASRec, BSARec, BERT4Rec, SR-GNN, Pop and ItemKNN trace clean;
* on probe histories of several batch sizes and lengths, with and without padding, the
  trace's top-k must be the eager model's and its scores within :data:`TOLERANCE`.

Otherwise, or with ``serve.scorer: eager``, the model's own ``score_all`` serves, and
:attr:`ServingScorer.reason` says why. ``torch.jit`` is deprecated in favour of
``torch.compile``/``torch.export``; neither runs without Python per-op overhead on a CPU
without a C compiler at start-up, so the trace stays until they do, and a torch without
``torch.jit`` falls back to eager.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from components.models.base import Recommender

log = logging.getLogger(__name__)

#: Largest accepted |traced - eager| score difference, relative to the scores' magnitude
#: (1 + max |score|): float32 rounding of a reordered sum is ~1e-7 of it.
TOLERANCE = 1e-5
#: (batch, length) of the histories the trace is checked on; the trace is recorded on the
#: first (one 3-item history, the common request)
PROBE_SHAPES = ((1, 3), (1, 1), (2, 7), (5, 2))
PROBE_K = 10


class _ScoreAll(nn.Module):
    """``model.score_all`` as a module with tensor-only arguments (what a trace records)."""

    def __init__(self, model: Recommender, with_events: bool) -> None:
        super().__init__()
        self.model = model
        self.with_events = with_events

    def forward(self, histories: Tensor, events: Tensor | None = None) -> Tensor:
        return self.model.score_all(histories, None, events if self.with_events else None)


@dataclass
class ServingScorer:
    """``scorer(histories [B, L], events [B, L] | None) -> [B, n_items + 1]``, as
    ``model.score_all(histories, None, events)`` computes it (users are not served)."""

    model: Recommender
    with_events: bool
    traced: torch.jit.ScriptModule | None = None
    reason: str = "serve.scorer is eager"

    @property
    def kind(self) -> str:
        """``traced`` or ``eager`` (what ``/metadata`` reports, with :attr:`reason`)."""
        return "traced" if self.traced is not None else "eager"

    def __call__(self, histories: Tensor, events: Tensor | None = None) -> Tensor:
        if self.traced is None:
            return self.model.score_all(histories, None, events if self.with_events else None)
        if self.with_events:
            if events is None:  # the trace takes event types: "none" for every position
                events = torch.zeros_like(histories)
            return self.traced(histories, events)
        return self.traced(histories)


def serving_scorer(
    model: Recommender, trace: bool, with_events: bool, device: torch.device
) -> ServingScorer:
    """With ``trace``: a checked frozen trace of ``model`` (eval mode, on ``device``, where
    its weights are), falling back to the eager model (logged) when the trace cannot
    stand for every input (see the module doc)."""
    scorer = ServingScorer(model, with_events)
    if not trace:
        return scorer
    model.eval()
    try:
        traced = _frozen_trace(model, with_events, device)
        mismatch = _mismatch(model, traced, with_events, device)
    except _Untraceable as exc:
        mismatch = str(exc)
    except Exception as exc:  # a model TorchScript cannot record: serve it eagerly
        mismatch = f"tracing failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    if mismatch is not None:
        scorer.reason = mismatch
        log.warning("serving %s eagerly: %s", type(model).__name__, mismatch)
        return scorer
    scorer.traced, scorer.reason = traced, "traced"
    return scorer


class _Untraceable(Exception):
    """Tracing read a tensor back into Python: the trace would not hold for other inputs."""


def _probe(
    model: Recommender, batch: int, length: int, seed: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Histories of real items (the first row left padded when it is long enough) and
    event types, on ``device``."""
    generator = torch.Generator().manual_seed(seed)
    histories = torch.randint(1, model.n_items + 1, (batch, length), generator=generator)
    if length > 2:  # a repeated item (the seen-item offset counts it once)
        histories[:, -1] = histories[:, 0]
    if length > 1:
        histories[0, : length // 2] = 0
    events = torch.zeros_like(histories)
    return histories.to(device), events.to(device)


def _frozen_trace(
    model: Recommender, with_events: bool, device: torch.device
) -> torch.jit.ScriptModule:
    module = _ScoreAll(model, with_events).eval()
    histories, events = _probe(model, *PROBE_SHAPES[0], seed=0, device=device)
    inputs = (histories, events) if with_events else (histories,)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        traced = torch.jit.freeze(torch.jit.trace(module, inputs, check_trace=False))
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    if tracer:
        where = f"{tracer[0].filename.rsplit('/', 1)[-1]}:{tracer[0].lineno}"
        raise _Untraceable(f"the trace reads tensor values in Python ({where})")
    return traced


def _mismatch(
    model: Recommender, traced: torch.jit.ScriptModule, with_events: bool, device: torch.device
) -> str | None:
    """Why ``traced`` does not stand for ``model`` on the probes (None when it does)."""
    with torch.inference_mode():
        for seed, (batch, length) in enumerate(PROBE_SHAPES):
            histories, events = _probe(model, batch, length, seed, device)
            ev = events if with_events else None
            want = model.score_all(histories, None, ev)[:, 1:].float()
            got = (traced(histories, events) if with_events else traced(histories))[:, 1:]
            got = got.float()
            scale = 1.0 + float(want.abs().max())
            if not bool(torch.allclose(got, want, rtol=0.0, atol=TOLERANCE * scale)):
                worst = float((got - want).abs().max())
                return f"traced scores differ by {worst:.2e} on a {batch}x{length} probe"
            k = min(PROBE_K, want.shape[1])
            if not torch.equal(got.topk(k).indices, want.topk(k).indices):
                return f"traced top-{k} differs on a {batch}x{length} probe"
    return None
