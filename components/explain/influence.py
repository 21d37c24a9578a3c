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
older events stay in every variant. Ranks cost more than the forward pass on a large
catalogue (a comparison of every variant row with every target: ``E x T x C``), so a
caller that lists only a few events per target (the service) passes ``listed`` and gets
rank changes for those events only (``Influence.ranked`` says which). Ranks count every real item (history items
included, since the model scores them too): rank 1 = highest score. A model whose
scores do not depend on the history (``uses_history = False``, e.g. ``pop``) has no
influence: its :class:`Influence` says ``explainable=False`` and holds no events.

This is not attention: attention weights say where a layer looked, deletion says what
the output would have been without the event.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from components.models.base import Recommender, mask_padding_column

METHOD = "deletion"
#: Rows per forward pass when many histories are explained together (whole histories
#: only: one history's variants are never split across passes).
MAX_ROWS_PER_PASS = 4096
#: ``(histories [Q, n], positions [E], events) -> [Q, E + 1, D] | None``: a model's
#: :meth:`~Recommender.encode_deletions`, or a compiled form of it
#: (:class:`components.explain.compiled.DeletionEncoder`)
EncodeDeletions = Callable[[Tensor, Tensor, "Tensor | None"], "Tensor | None"]


@dataclass(frozen=True)
class Question:
    """What to explain: ``targets`` (item indices) given ``history`` (oldest first, no
    padding) and, for a model that reads them, each event's type index (``events``,
    aligned with ``history``: a deleted event takes its type with it)."""

    history: Tensor  # [L] int64
    targets: Tensor  # [T] int64
    events: Tensor | None = None  # [L] int64
    #: with ``listed``: whether the rank changes of the supporting (positive drop) and of the
    #: opposing (negative drop) listed events are wanted (a caller that shows only one side
    #: saves scoring the other side's variant rows)
    rank_support: bool = True
    rank_against: bool = True


def score_rows(model: Recommender, rows: Tensor, events: Tensor | None) -> Tensor:
    """``model.score_all`` of left-padded ``rows`` with their aligned event types (if any)."""
    if events is None:
        return model.score_all(rows)
    return model.score_all(rows, None, events)


def event_rows(
    question: Question, width: int, max_events: int, removed: Tensor | None, device: torch.device
) -> Tensor | None:
    """The event types of :func:`deletion_rows`' rows for ``question`` (None without)."""
    if question.events is None:
        return None
    return deletion_rows(question.events.to(device), width, max_events, removed)[0]


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
    rank_changes: Tensor  # [T, E] (0 where ``ranked`` is False)
    ranked: Tensor | None = None  # [T, E] bool: rank change computed (None: everywhere)

    def top_events(self, target: int, n: int) -> list[int]:
        """Column indices (into ``positions``) of the ``n`` events with the largest score
        drop for target row ``target``, largest first; ties keep the most recent first."""
        return self.top_columns(n)[target].tolist()

    def top_columns(self, n: int) -> Tensor:
        """``[T, min(n, E)]``: :meth:`top_events` of every target (one sort)."""
        n = max(0, min(n, self.drops.shape[1]))
        # stable sort on the reversed rows: equal drops list the most recent event first
        order = torch.argsort(self.drops.flip(1), dim=1, descending=True, stable=True)
        return (self.drops.shape[1] - 1 - order)[:, :n]

    def bottom_columns(self, n: int) -> Tensor:
        """``[T, min(n, E)]``: :meth:`bottom_events` of every target (one sort)."""
        n = max(0, min(n, self.drops.shape[1]))
        return torch.argsort(self.drops, dim=1, stable=True)[:, :n]

    def bottom_events(self, target: int, n: int) -> list[int]:
        """Column indices of the ``n`` events with the smallest score drop (the most
        negative first: the events that hold ``target`` back most); ties keep the oldest."""
        return self.bottom_columns(n)[target].tolist()


def is_explainable(model: Recommender) -> bool:
    """Whether ``model``'s scores depend on the history at all."""
    return bool(getattr(model, "uses_history", True))


def deletion_rows(
    history: Tensor, width: int, max_events: int, removed: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(rows [E + 1, width], positions [E])``: row 0 is ``history`` left-padded, row
    ``e + 1`` is it without the event at ``positions[e]`` (the ``E`` most recent of the
    ``max_events`` most recent events that are still there).

    ``removed`` (``[L]`` bool over the scored history, the last ``width`` events) marks
    events already deleted: they are missing from every row, row 0 included, and are not
    candidates (greedy group deletion, :mod:`components.explain.group`)."""
    history = history[-width:] if width > 0 else history[:0]
    length = history.shape[0]
    device = history.device
    present = torch.ones(length, dtype=torch.bool, device=device)
    if removed is not None:
        present &= ~removed.to(device)
    window = torch.arange(max(0, length - max(0, max_events)), length, device=device)
    positions = window[present[window]]
    n_events, kept = positions.shape[0], int(present.sum())
    rows = torch.zeros(n_events + 1, width, dtype=torch.long, device=device)
    if kept:
        rows[0, width - kept :] = history[present]
    if n_events and kept > 1:
        keep = present.expand(n_events, length).clone()
        keep[torch.arange(n_events, device=device), positions] = False
        shortened = history.expand(n_events, length)[keep].view(n_events, kept - 1)
        rows[1:, width - kept + 1 :] = shortened
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


def ranks_at(scores: Tensor, thresholds: Tensor) -> Tensor:
    """``[R]`` 1-based rank of a score ``thresholds[r]`` within row ``r`` of ``scores [R, C]``
    (1 + the number of items scored strictly higher)."""
    return (scores > thresholds[:, None]).sum(dim=1) + 1


def counts_above(block: Tensor, rows: Tensor, thresholds: Tensor) -> Tensor:
    """``[K]``: how many entries of row ``rows[k]`` of ``block [R, C]`` are strictly above
    ``thresholds[k]`` (``ranks_at`` of ``block[rows]`` less one, without copying a row per
    query).

    Only the entries above their row's smallest threshold can count, and for the
    top-ranked items an explanation asks about they are few: the columns holding any of
    them are picked out with one comparison of ``block``, and each query is compared with
    its row in those columns only (any entry above its threshold is in one of them). Where
    they are not few (items ranked far down) the rows are compared whole. (The columns,
    not the entries: ``nonzero`` over the whole ``[R, C]`` comparison was half the cost.)"""
    floor = torch.full_like(block[:, 0], float("inf"))
    floor = floor.scatter_reduce(0, rows, thresholds, "amin")
    columns = (block > floor[:, None]).any(dim=0).nonzero()[:, 0]
    if columns.shape[0] > block.shape[1] // 4:
        return (block[rows] > thresholds[:, None]).sum(dim=1)
    return (block[:, columns][rows] > thresholds[:, None]).sum(dim=1)


def model_device(model: Recommender) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with none."""
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
    listed: int | None = None,
    deletions: EncodeDeletions | None = None,
) -> list[Influence]:
    """The :class:`Influence` of each question, scoring every question's variants in
    batched forward passes (one pass unless the rows exceed ``max_rows``). ``width`` is
    the model's history length (``max_len``). With ``listed``, rank changes are computed
    only for each target's ``listed`` top and bottom events
    (:meth:`Influence.top_events` / :meth:`Influence.bottom_events`). ``deletions``
    stands for ``model.encode_deletions`` (the serving engine's compiled form).

    A model that scores by a dot product with its item table (it keeps the base
    ``score_all``) is encoded instead (its :meth:`~Recommender.encode_deletions` shortcut
    when it has one, else one batched ``encode`` of the variant rows): the drops need the
    targets' columns only, and full catalogue rows are scored (one matmul) only for the
    rows whose ranks are asked for."""
    device = model_device(model)
    explainable = is_explainable(model)
    events = max_events if explainable else 0
    built = [deletion_rows(q.history.to(device), width, events) for q in questions]
    kinds = [event_rows(q, width, events, None, device) for q in questions]
    if explainable and scores_by_dot_product(model):
        hidden = _encodings(model, questions, built, kinds, width, max_rows, deletions)
        scorers: list[VariantScores] = [
            EncodedScores(model, h, rows, kind)
            for h, (rows, _), kind in zip(hidden, built, kinds, strict=True)
        ]
    else:
        scorers = _scored_blocks(model, built, kinds, max_rows)
    return [
        _influence(scorer, rows_positions, question, explainable, device, listed)
        for scorer, rows_positions, question in zip(scorers, built, questions, strict=True)
    ]


class VariantScores(Protocol):
    """Scores of one question's rows (row 0 = whole history, row ``e + 1`` = without
    event ``e``): the targets' columns of every row, or whole catalogue rows."""

    def columns(self, targets: Tensor) -> Tensor:
        """``[R, T]`` float scores of ``targets`` in every row."""
        ...

    def rows(self, index: Tensor) -> Tensor:
        """``[len(index), n_items + 1]`` float scores of rows ``index`` (as ``score_all``)."""
        ...


@dataclass(frozen=True)
class BlockScores:
    """Scores already computed by ``score_all`` for every row."""

    block: Tensor  # [R, n_items + 1] float

    def columns(self, targets: Tensor) -> Tensor:
        return self.block[:, targets]

    def rows(self, index: Tensor) -> Tensor:
        return self.block[index]


@dataclass(frozen=True)
class EncodedScores:
    """Scores of a dot-product model from the rows' encodings ``hidden [R, D]``: equal to
    its ``score_all`` of ``rows`` (the seen-item offset included) up to float rounding."""

    model: Recommender
    hidden: Tensor  # [R, D]
    histories: Tensor  # [R, width] the rows as scored (for the seen-item offset)
    events: Tensor | None

    def columns(self, targets: Tensor) -> Tensor:
        scores = (self.hidden @ self.model.output_embeddings()[targets].T).float()
        # only seen items get an offset, and every row's items are the whole history's (its
        # row 0): targets outside it (recommended items, history excluded) get none
        # (one broadcast comparison: ``torch.isin`` sorts, ~0.1 ms per explained request)
        if not bool((targets[:, None] == self.histories[0][None]).any()):
            return scores
        offsets = self.model.seen_offsets_at(self.histories, targets[None, :], self.events)
        return scores if offsets is None else scores + offsets.float()

    def rows(self, index: Tensor) -> Tensor:
        scores = self.hidden[index] @ self.model.output_embeddings().T
        events = None if self.events is None else self.events[index]
        seen = self.model.add_seen_bias(scores, self.histories[index], events)
        return mask_padding_column(seen).float()


def scores_by_dot_product(model: Recommender) -> bool:
    """Whether ``model`` scores as ``encode(history) @ output_embeddings().T`` plus the
    seen-item offset (it keeps the base class's ``score_all``)."""
    return type(model).score_all is Recommender.score_all


def _scored_blocks(
    model: Recommender,
    built: Sequence[tuple[Tensor, Tensor]],
    kinds: Sequence[Tensor | None],
    max_rows: int,
) -> list[VariantScores]:
    """Every question's rows through ``score_all``, in passes of at most ``max_rows``."""
    sizes = [rows.shape[0] for rows, _ in built]
    out: list[VariantScores] = []
    for start, stop in _chunks(sizes, max_rows):
        rows = torch.cat([rows for rows, _ in built[start:stop]])
        scores = score_rows(model, rows, _joined(kinds[start:stop], built[start:stop]))
        for offset, size in zip(_offsets(sizes[start:stop]), sizes[start:stop], strict=True):
            out.append(BlockScores(scores[offset : offset + size].float()))
    return out


def _encodings(
    model: Recommender,
    questions: Sequence[Question],
    built: Sequence[tuple[Tensor, Tensor]],
    kinds: Sequence[Tensor | None],
    width: int,
    max_rows: int,
    encode: EncodeDeletions | None = None,
) -> list[Tensor]:
    """``[R_q, D]`` encodings of every question's rows: the model's
    :meth:`~Recommender.encode_deletions` shortcut (or ``encode``, standing for it) where
    it has one (questions with equally long histories together), the others' rows in
    batched ``encode`` passes."""
    shortcut = encode if encode is not None else model.encode_deletions
    found: list[Tensor | None] = [None] * len(questions)
    for members in _same_shape(built, max_rows):
        hidden = _shortcut(shortcut, [questions[i] for i in members], [built[i] for i in members])
        if hidden is not None:
            for index, states in zip(members, hidden, strict=True):
                found[index] = states
    missing = [index for index, hidden in enumerate(found) if hidden is None]
    sizes = [built[index][0].shape[0] for index in missing]
    for start, stop in _chunks(sizes, max_rows):
        part = missing[start:stop]
        rows = torch.cat([built[index][0] for index in part])
        events = _joined([kinds[index] for index in part], [built[index] for index in part])
        hidden = model.encode(rows, None, events)
        for offset, index in zip(_offsets(sizes[start:stop]), part, strict=True):
            found[index] = hidden[offset : offset + built[index][0].shape[0]]
    return [hidden for hidden in found if hidden is not None]


def _same_shape(built: Sequence[tuple[Tensor, Tensor]], max_rows: int) -> list[list[int]]:
    """Indices of questions with equally long histories and the same deleted positions,
    in groups of at most ``max_rows`` rows."""
    groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for index, (rows, positions) in enumerate(built):
        key = (int((rows[0] != 0).sum()), tuple(positions.tolist()))
        groups.setdefault(key, []).append(index)
    out = []
    for members in groups.values():
        per = max(1, max_rows // built[members[0]][0].shape[0])
        out += [members[start : start + per] for start in range(0, len(members), per)]
    return out


def _shortcut(
    encode: EncodeDeletions,
    questions: Sequence[Question],
    built: Sequence[tuple[Tensor, Tensor]],
) -> Tensor | None:
    """``[Q, E + 1, D]`` from ``encode`` (a model's ``encode_deletions``) for questions of
    one shape."""
    histories = torch.stack([rows[0][rows[0] != 0] for rows, _ in built])
    if histories.shape[1] == 0:
        return None
    events = None
    if any(q.events is not None for q in questions):
        # as the batched encode: a question without event types has type 0 (none)
        length = histories.shape[1]
        events = torch.stack(
            [
                torch.zeros(length, dtype=torch.long) if q.events is None else q.events[-length:]
                for q in questions
            ]
        ).to(histories.device)
    return encode(histories, built[0][1], events)


def _joined(
    kinds: Sequence[Tensor | None], built: Sequence[tuple[Tensor, Tensor]]
) -> Tensor | None:
    """The event-type rows of a pass (zeros for questions without types; None if none has)."""
    if all(k is None for k in kinds):
        return None
    return torch.cat(
        [
            torch.zeros_like(rows) if k is None else k
            for k, (rows, _) in zip(kinds, built, strict=True)
        ]
    )


def _offsets(sizes: Sequence[int]) -> list[int]:
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += size
    return offsets


def _influence(
    scores: VariantScores,
    built: tuple[Tensor, Tensor],
    question: Question,
    explainable: bool,
    device: torch.device,
    listed: int | None,
) -> Influence:
    rows, positions = built
    targets = question.targets.to(device)
    target_scores = scores.columns(targets)  # [E + 1, T]
    influence = Influence(
        explainable=explainable,
        history=rows[0][rows[0] != 0].cpu(),
        positions=positions.cpu(),
        targets=targets.cpu(),
        scores=target_scores[0].cpu(),
        ranks=torch.zeros(targets.shape[0], dtype=torch.long),
        drops=(target_scores[:1] - target_scores[1:]).T.cpu(),
        rank_changes=torch.zeros(targets.shape[0], positions.shape[0], dtype=torch.long),
    )
    if listed is None:
        block = scores.rows(torch.arange(rows.shape[0], device=device))
        ranks = ranks_of(block, targets)  # [E + 1, T]
        changes = (ranks[1:] - ranks[:1]).T.cpu()
        return replace(influence, ranks=ranks[0].cpu(), rank_changes=changes)
    return _with_listed_ranks(influence, scores, listed, question, device)


def _with_listed_ranks(
    influence: Influence,
    scores: VariantScores,
    listed: int,
    question: Question,
    device: torch.device,
) -> Influence:
    """``influence`` with the targets' ranks and the rank changes of each target's
    ``listed`` top events that raise it and bottom events that lower it (the events an
    explanation lists; either side only if ``question`` asks for it).

    The whole history's row and the distinct variant rows the listed events need are
    scored together (one ``[1 + V, C]`` product); each (row, target) pair is then one
    comparison of its row with the target's score in it, instead of ``E x T x C``."""
    drops = influence.drops
    n_targets, n_events = drops.shape
    ranked = torch.zeros(n_targets, n_events, dtype=torch.bool)
    if question.rank_support:
        top = influence.top_columns(listed)
        ranked.scatter_(1, top, drops.gather(1, top) > 0)
    if question.rank_against:
        bottom = influence.bottom_columns(listed)
        ranked |= torch.zeros_like(ranked).scatter_(1, bottom, drops.gather(1, bottom) < 0)
    pair_targets, pair_columns = ranked.nonzero(as_tuple=True)
    needed, local = torch.unique(pair_columns, return_inverse=True)
    targets = influence.targets
    block = scores.rows(torch.cat([torch.zeros(1, dtype=torch.long), needed + 1]).to(device))
    # the whole history's rank of every target, then each listed pair's
    row_of = torch.cat([torch.zeros(n_targets, dtype=torch.long), local + 1]).to(device)
    target_of = torch.cat([targets, targets[pair_targets]]).to(device)
    ranks = (counts_above(block, row_of, block[row_of, target_of]) + 1).cpu()
    changes = torch.zeros(n_targets, n_events, dtype=torch.long)
    changes[pair_targets, pair_columns] = ranks[n_targets:] - ranks[pair_targets]
    return replace(influence, ranks=ranks[:n_targets], rank_changes=changes, ranked=ranked)
