"""Counterfactual-deletion influence of history events on a model's scores.

For a history of ``L`` events and a target item ``i``, the influence of event ``j`` is
what the model says when ``j`` had not happened: the history without ``j`` is re-scored
and

- ``drop[i, j] = score(i | history) - score(i | history without j)`` in the model's
  score units (positive: the event pushed ``i`` up), and
- ``rank_change[i, j] = rank(i | without j) - rank(i | history)`` (positive: ``i`` falls
  that many places when the event is removed).

The ``L`` variants and the full history are scored together in one batched forward
pass, for any :class:`~components.models.base.Recommender` through its public
``score_all`` (sequence, graph or neighbourhood model alike). Histories are scored
without user ids: that is how the service scores them (``users`` is never passed), and
it is what makes deletion meaningful for LightGCN, whose graph user vector ignores the
history; with the history alone it folds the history's item vectors in.

Only the ``max_events`` most recent events are deleted (bounded work per history);
older events stay in every variant. Ranks count every real item (history items
included, since the model scores them too): rank 1 = highest score. A model whose
scores do not depend on the history (``uses_history = False``, e.g. ``pop``) has no
influence: its :class:`Influence` says ``explainable=False`` and holds no events.

This is not attention: attention weights say where a layer looked, deletion says what
the output would have been without the event.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from components.models.base import Recommender

METHOD = "deletion"
#: Rows per forward pass when many histories are explained together (whole histories
#: only: one history's variants are never split across passes).
MAX_ROWS_PER_PASS = 4096


@dataclass(frozen=True)
class Question:
    """What to explain: ``targets`` (item indices) given ``history`` (oldest first, no
    padding)."""

    history: Tensor  # [L] int64
    targets: Tensor  # [T] int64


@dataclass(frozen=True)
class Influence:
    """The deletion influence of the explained events of one history on its targets.

    ``positions[e]`` indexes the history (0 = oldest) of the ``e``-th explained event;
    ``drops`` and ``rank_changes`` are ``[T, E]`` (targets x explained events).
    """

    explainable: bool
    history: Tensor  # [L] the history as scored (the last ``width`` events)
    positions: Tensor  # [E]
    targets: Tensor  # [T]
    scores: Tensor  # [T] target scores with the whole history
    ranks: Tensor  # [T] 1-based target ranks with the whole history
    drops: Tensor  # [T, E]
    rank_changes: Tensor  # [T, E]

    def top_events(self, target: int, n: int) -> list[int]:
        """Column indices (into ``positions``) of the ``n`` events with the largest score
        drop for target row ``target``, largest first; ties keep the most recent first."""
        if self.drops.shape[1] == 0 or n <= 0:
            return []
        row = self.drops[target]
        # stable sort on the reversed row: equal drops list the most recent event first
        order = torch.argsort(row.flip(0), descending=True, stable=True)
        columns = row.shape[0] - 1 - order
        return columns[: min(n, row.shape[0])].tolist()


def is_explainable(model: Recommender) -> bool:
    """Whether ``model``'s scores depend on the history at all."""
    return bool(getattr(model, "uses_history", True))


def deletion_rows(history: Tensor, width: int, max_events: int) -> tuple[Tensor, Tensor]:
    """``(rows [E + 1, width], positions [E])``: row 0 is ``history`` left-padded, row
    ``e + 1`` is it without the event at ``positions[e]`` (the ``E = min(L, max_events)``
    most recent events)."""
    history = history[-width:] if width > 0 else history[:0]
    length = history.shape[0]
    n_events = max(0, min(length, max_events))
    positions = torch.arange(length - n_events, length, device=history.device)
    rows = torch.zeros(n_events + 1, width, dtype=torch.long, device=history.device)
    if length:
        rows[0, width - length :] = history
    if n_events and length > 1:
        keep = torch.ones(n_events, length, dtype=torch.bool, device=history.device)
        keep[torch.arange(n_events), positions] = False
        shortened = history.expand(n_events, length)[keep].view(n_events, length - 1)
        rows[1:, width - length + 1 :] = shortened
    return rows, positions


def ranks_of(scores: Tensor, targets: Tensor) -> Tensor:
    """``[R, T]`` 1-based rank of each target in each row of ``scores [R, C]`` (1 + the
    number of items scored strictly higher; ``-inf`` padding never counts).

    One comparison pass per target (``R x C`` each): for the few targets a request
    explains this is about 10x cheaper than sorting every row (measured on one shared
    core, 51 x 12,101 scores, 10 targets: 150 ms sorted, 13-15 ms compared)."""
    target_scores = scores[:, targets]
    columns = [(scores > target_scores[:, t : t + 1]).sum(dim=1) for t in range(len(targets))]
    if not columns:
        return torch.zeros(scores.shape[0], 0, dtype=torch.long, device=scores.device)
    return torch.stack(columns, dim=1) + 1


def _device(model: Recommender) -> torch.device:
    # parameters, then buffers, as ModelBundle.device: ``state_dict()`` builds a dict of
    # every tensor, on the request path for each explained batch
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _chunks(sizes: Sequence[int], limit: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges over ``sizes`` whose rows sum to at most ``limit`` (a
    single larger item gets a range of its own)."""
    start, rows = 0, 0
    for index, size in enumerate(sizes):
        if rows and rows + size > limit:
            yield start, index
            start, rows = index, 0
        rows += size
    if start < len(sizes):
        yield start, len(sizes)


@torch.no_grad()
def deletion_influence(
    model: Recommender,
    questions: Sequence[Question],
    width: int,
    max_events: int,
    max_rows: int = MAX_ROWS_PER_PASS,
) -> list[Influence]:
    """The :class:`Influence` of each question, scoring every question's variants in
    batched forward passes of ``model.score_all`` (one pass unless the rows exceed
    ``max_rows``). ``width`` is the model's history length (``max_len``)."""
    device = _device(model)
    explainable = is_explainable(model)
    events = max_events if explainable else 0
    built = [deletion_rows(q.history.to(device), width, events) for q in questions]
    sizes = [rows.shape[0] for rows, _ in built]
    out: list[Influence] = []
    for start, stop in _chunks(sizes, max_rows):
        scores = model.score_all(torch.cat([rows for rows, _ in built[start:stop]]))
        for offset, index in zip(_offsets(sizes[start:stop]), range(start, stop), strict=True):
            block = scores[offset : offset + sizes[index]].float()
            out.append(_influence(block, built[index], questions[index], explainable, device))
    return out


def _offsets(sizes: Sequence[int]) -> list[int]:
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += size
    return offsets


def _influence(
    block: Tensor,
    built: tuple[Tensor, Tensor],
    question: Question,
    explainable: bool,
    device: torch.device,
) -> Influence:
    rows, positions = built
    targets = question.targets.to(device)
    ranks = ranks_of(block, targets)  # [E + 1, T]
    target_scores = block[:, targets]  # [E + 1, T]
    history = rows[0][rows[0] != 0]
    return Influence(
        explainable=explainable,
        history=history.cpu(),
        positions=positions.cpu(),
        targets=targets.cpu(),
        scores=target_scores[0].cpu(),
        ranks=ranks[0].cpu(),
        drops=(target_scores[:1] - target_scores[1:]).T.cpu(),
        rank_changes=(ranks[1:] - ranks[:1]).T.cpu(),
    )
