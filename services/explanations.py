"""Explanations on the request path: which history events drove a recommendation.

The batched explanation call (:meth:`services.engine.Engine.explain`) computes, for every
query that asks for it, the counterfactual-deletion influence of its most recent events
(``components.explain.influence``: all variants of all explained queries of a batch in
one forward pass) on its target items (the recommended ones, or the item a ``/explain``
request names). The recommendations themselves come from the unchanged scoring path
before that, so explaining never changes what is recommended.

Two methods (``method``): ``deletion`` (each event removed alone; one pass, the default
of ``/recommend``) and ``group`` (greedy group deletion,
:mod:`components.explain.group`: the listed events are the ones whose removal *together*
lowers the item most, each with its marginal drop once the events listed before it are
gone; ``top`` more passes per item, the default of ``/explain``, which explains one
item). ``against`` is always single-event deletion.

Influence is reported in the model's score units (how much the item's score drops when
the event is removed) and as a rank change (how many places the item falls). Work is
bounded per request: at most ``max_history`` events are deleted (the most recent ones)
and at most ``max_k`` items explained.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from components.explain.group import GroupDeletion, greedy_group_deletion
from components.explain.influence import (
    EncodeDeletions,
    Influence,
    Question,
    deletion_influence,
)
from components.explain.search import searched_group_deletion
from components.models.base import Recommender
from services.wire import Because, Method


class ExplainLimits(BaseModel):
    """Per-deployment bounds on explanation work (from ``serve.explain_*``)."""

    max_history: int = Field(50, ge=1)
    max_k: int = Field(20, ge=1)
    top_events: int = Field(5, ge=1)


# --- internal (vocabulary indices; crosses the batch dispatcher) ------------------------
# plain slotted dataclasses, built from tensors' own ints and floats: an explained
# /recommend builds some 60 of them per request, and a pydantic model_construct each cost
# about 1.2 ms of a 7.6 ms explained request (cProfile, thread time)
@dataclass(slots=True)
class EventInfluence:
    """One event's influence on one item; ``position`` indexes the query history."""

    position: int
    influence: float
    rank_change: int


@dataclass(slots=True)
class ItemInfluence:
    """Why one item scores as it does: the events that support it most and least."""

    item: int
    score: float
    rank: int
    support: list[EventInfluence]
    against: list[EventInfluence]


@dataclass(slots=True)
class QueryInfluence:
    """All explained items of one query, and whether the model could be explained."""

    explainable: bool
    events_explained: int
    items: list[ItemInfluence]
    method: Method = "deletion"


# --- public ------------------------------------------------------------------------
GROUP_NOTE = (
    "group deletion: each 'because' event's influence is the item's score drop when it is "
    "removed after the events listed before it; its rank_change is with all of them removed"
)


def explain_queries(
    model: Recommender,
    histories: Sequence[list[int]],
    targets: Sequence[list[int]],
    tops: Sequence[int],
    width: int,
    limits: ExplainLimits,
    methods: Sequence[Method] | None = None,
    events: Sequence[list[int] | None] | None = None,
    against: Sequence[bool] | None = None,
    deletions: EncodeDeletions | None = None,
) -> list[QueryInfluence]:
    """Influence of each history's most recent events on its targets: single-event
    deletion for all queries in one batched pass, then greedy group deletion (one batched
    pass per listed event) for the queries whose method is ``group``; ``tops[q]`` events
    are listed per item of query ``q``; ``events[q]``: event-type indices aligned with
    ``histories[q]`` for a model that reads them (a deleted event takes its type along).
    Rank changes are computed only for events the answer lists: the single-deletion
    support of ``deletion`` queries and, where ``against[q]`` (default all), the events
    against each item. ``deletions`` stands for the model's ``encode_deletions`` (the
    engine's compiled form, components/explain/compiled.py)."""
    kinds = list(events) if events is not None else [None] * len(histories)
    opposed = list(against) if against is not None else [True] * len(histories)
    chosen = list(methods) if methods is not None else ["deletion"] * len(histories)
    questions = [
        Question(
            torch.as_tensor(h, dtype=torch.long),
            torch.as_tensor(t, dtype=torch.long),
            None if e is None else torch.as_tensor(e, dtype=torch.long),
            rank_support=m == "deletion",  # group/search support has rank changes of its own
            rank_against=a,
        )
        for h, t, e, m, a in zip(histories, targets, kinds, chosen, opposed, strict=True)
    ]
    listed = max(tops, default=limits.top_events)
    influences = deletion_influence(
        model, questions, width, limits.max_history, listed=listed, deletions=deletions
    )
    out = [_query_influence(i, top, a) for i, top, a in zip(influences, tops, opposed, strict=True)]
    grouped = [q for q, m in enumerate(chosen) if m == "group"]
    if grouped:
        found = greedy_group_deletion(
            model, [questions[q] for q in grouped], width, limits.max_history, listed
        )
        for q, per_target in zip(grouped, found, strict=True):
            out[q] = _with_group_support(out[q], per_target, tops[q], "group")
    searched = [q for q, m in enumerate(chosen) if m == "search"]
    if searched:
        sets = searched_group_deletion(
            model, [questions[q] for q in searched], width, limits.max_history
        )
        for q, per_target in zip(searched, sets, strict=True):
            out[q] = _with_group_support(out[q], per_target, tops[q], "search")
    return out


def _with_group_support(
    query: QueryInfluence, per_target: list[GroupDeletion], top: int, method: Method
) -> QueryInfluence:
    """``query`` with each item's ``support`` replaced by its first ``top`` group picks:
    greedy picks up to the first that did not lower the score; a searched set up to where
    removing its events one after the other has lowered the score most (its events may
    matter only together: three interchangeable events show marginal drops 0, 0, 1)."""
    items = []
    for item, group in zip(query.items, per_target, strict=True):
        picks = list(
            zip(
                group.positions.tolist(),
                group.drops.tolist(),
                group.rank_changes.tolist(),
                strict=True,
            )
        )[:top]
        kept = _searched_prefix(picks) if method == "search" else _greedy_prefix(picks)
        support = [
            EventInfluence(position=position, influence=drop, rank_change=change)
            for position, drop, change in kept
        ]
        items.append(replace(item, support=support))
    return replace(query, items=items, method=method)


Pick = tuple[int, float, int]


def _greedy_prefix(picks: list[Pick]) -> list[Pick]:
    # marginal drops assume every earlier pick is gone: stop at the first one that does
    # not lower the score rather than skip it
    return list(itertools.takewhile(lambda p: p[1] > 0, picks))


def _searched_prefix(picks: list[Pick]) -> list[Pick]:
    """The shortest prefix with the largest total drop (none if no prefix lowers the score)."""
    totals = list(itertools.accumulate(drop for _, drop, _ in picks))
    if not totals or max(totals) <= 0:
        return []
    return picks[: totals.index(max(totals)) + 1]


def _query_influence(influence: Influence, top: int, against: bool = True) -> QueryInfluence:
    """The listed events of every item: its ``top`` events with the largest positive drops
    (``support``) and, where ``against``, its ``top`` with the most negative ones."""
    # positions index the scored history (its last `width` items) = the query history's tail
    support = _listed(influence, influence.top_columns(top), positive=True)
    opposed = _listed(influence, influence.bottom_columns(top), positive=False) if against else None
    scores, ranks = influence.scores.tolist(), influence.ranks.tolist()
    items = [
        ItemInfluence(
            item=item,
            score=scores[row],
            rank=ranks[row],
            support=support[row],
            against=opposed[row] if opposed is not None else [],
        )
        for row, item in enumerate(influence.targets.tolist())
    ]
    return QueryInfluence(
        explainable=influence.explainable,
        events_explained=int(influence.positions.shape[0]),
        items=items,
    )


def _listed(influence: Influence, columns: Tensor, positive: bool) -> list[list[EventInfluence]]:
    """Per target row, the events at ``columns [T, n]`` (into ``influence.positions``) as
    :class:`EventInfluence`, the ones on the wrong side (or with no effect) left out: only
    the listed entries are gathered and converted (one ``tolist`` each), not the rows."""
    drops = influence.drops.gather(1, columns)
    wanted = (drops > 0) if positive else (drops < 0)
    positions = influence.positions[columns].tolist()
    changes = influence.rank_changes.gather(1, columns).tolist()
    return [
        [
            EventInfluence(position, drop, change)
            for position, drop, change, keep in zip(*row, strict=True)
            if keep
        ]
        for row in zip(positions, drops.tolist(), changes, wanted.tolist(), strict=True)
    ]


def render_because(
    events: list[EventInfluence],
    history_tokens: list[str],
    original_positions: list[int],
    original_length: int,
    event_types: list[str] | None,
) -> list[Because]:
    """Public events: item ids, positions in the history as given, event types."""
    return [
        Because(**row)
        for row in because_rows(
            events, history_tokens, original_positions, original_length, event_types
        )
    ]


def because_rows(
    events: list[EventInfluence],
    history_tokens: list[str],
    original_positions: list[int],
    original_length: int,
    event_types: list[str] | None,
) -> list[dict[str, Any]]:
    """:func:`render_because` as JSON-ready data (the fields of :class:`Because`, in its
    order), for the service's hot path, which serialises them without a model per event."""
    out = []
    for event in events:
        original = original_positions[event.position]
        out.append(
            {
                "item_id": history_tokens[event.position],
                "position": original,
                "events_ago": original_length - original,
                "event_type": event_types[original] if event_types is not None else None,
                "influence": round(event.influence, 6),
                "rank_change": event.rank_change,
            }
        )
    return out
