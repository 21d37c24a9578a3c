"""Searched group deletion: the set of ``size`` events whose removal together lowers an
item's score most, found by trying every such set among a pool of candidates.

Greedy group deletion (:mod:`components.explain.group`) commits to its first pick. A
sequence model often leans on its last few events as a block, so that the three most
recent events together can lower an item more than any greedy chain: measured on ml-100k
and Beauty, greedy triples beat the 3 most recent events strictly for 66-76 % of users and
tied or lost for the rest. This search scores every ``size``-subset of a candidate pool (the
``pool`` events with the largest single-event drops, the greedy picks when given, and the
``size`` most recent events) in batched passes and keeps the most damaging one: since the
most recent events are always candidates, the set found lowers the item at least as much
as deleting them; where it lowers it by exactly as much, the most recent events *are* the
most damaging set the search saw. Every number is a re-scoring of a real counterfactual
history. Cost: ``C(pool + size, size)`` histories per (history, target), at most 286 for
the defaults.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from components.explain.group import GroupDeletion, greedy_group_deletion
from components.explain.influence import (
    EncodedScores,
    Question,
    deletion_influence,
    is_explainable,
    model_device,
    ranks_at,
    score_rows,
    scores_by_dot_product,
)
from components.models.base import Recommender

METHOD = "search"
POOL = 10
MAX_ROWS = 2048


@dataclass(frozen=True)
class DeletionSet:
    """The most damaging set found for one (history, target).

    ``positions`` index the scored history (0 = oldest), ordered by single-event drop
    (largest first); ``drop`` is the target's score drop with all of them removed."""

    target: int
    positions: Tensor  # [size]
    drop: float


@torch.no_grad()
def best_deletion_sets(
    model: Recommender,
    questions: Sequence[Question],
    width: int,
    size: int = 3,
    pool: int = POOL,
    extra: Sequence[Sequence[Sequence[int]]] | None = None,
    max_events: int | None = None,
) -> list[list[DeletionSet]]:
    """Per question, per target: the ``size`` events (of the ``max_events`` most recent,
    default all ``width``) whose joint deletion lowers the target's score most among every
    ``size``-subset of the pool: the ``pool`` largest single-event drops, ``extra[q][t]``
    (e.g. greedy picks) and the ``size`` most recent events. A history of at most ``size``
    events is deleted whole; a model whose scores do not depend on the history gets empty
    sets."""
    singles = deletion_influence(model, questions, width, max_events or width)
    out: list[list[DeletionSet]] = []
    for q, (question, single) in enumerate(zip(questions, singles, strict=True)):
        history = question.history[-width:]
        kinds = None if question.events is None else question.events[-width:]
        found = []
        for t, target in enumerate(question.targets.tolist()):
            if not is_explainable(model) or len(history) == 0:
                found.append(DeletionSet(target, torch.zeros(0, dtype=torch.long), 0.0))
                continue
            drops = single.drops[t]
            given = extra[q][t] if extra is not None else []
            pool_of = candidates(drops, single.positions, size, pool, given)
            combos = _combinations(pool_of, min(size, len(pool_of)))
            scored = _joint_scores(model, history, kinds, combos, target, width)
            best = int(torch.argmax(float(single.scores[t]) - scored))
            chosen = _by_single_drop(combos[best], drops, single.positions)
            found.append(DeletionSet(target, chosen, float(single.scores[t] - scored[best])))
        out.append(found)
    return out


def candidates(
    drops: Tensor, positions: Tensor, size: int, pool: int, extra: Sequence[int] = ()
) -> list[int]:
    """History positions to search: the ``pool`` largest single drops, ``extra`` and the
    ``size`` most recent events (sorted, distinct)."""
    top = positions[torch.argsort(drops, descending=True, stable=True)[:pool]].tolist()
    recent = positions[-size:].tolist()
    return sorted({*top, *extra, *recent})


def _combinations(pool: list[int], size: int) -> Tensor:
    """``[K, size]`` every ``size``-subset of ``pool``."""
    return torch.tensor(list(itertools.combinations(pool, size)), dtype=torch.long)


def _joint_scores(
    model: Recommender,
    history: Tensor,
    kinds: Tensor | None,
    combos: Tensor,
    target: int,
    width: int,
) -> Tensor:
    """``[K]`` the target's score given ``history`` without each row of ``combos``."""
    device = model_device(model)
    rows = _without(history.to(device), combos.to(device), width)
    types = None if kinds is None else _without(kinds.to(device), combos.to(device), width)
    parts = []
    for start in range(0, rows.shape[0], MAX_ROWS):
        part = rows[start : start + MAX_ROWS]
        kind = None if types is None else types[start : start + MAX_ROWS]
        parts.append(target_column(model, part, kind, target))
    return torch.cat(parts).cpu()


def target_column(model: Recommender, rows: Tensor, events: Tensor | None, item: int) -> Tensor:
    """``[R]`` float ``score_all(rows)[:, item]``; a dot-product model scores only that
    item (no catalogue-wide scores)."""
    if not scores_by_dot_product(model):
        return score_rows(model, rows, events)[:, item].float()
    encoded = EncodedScores(model, model.encode(rows, None, events), rows, events)
    return encoded.columns(torch.tensor([item], device=rows.device))[:, 0]


def _without(history: Tensor, combos: Tensor, width: int) -> Tensor:
    """``[K, width]`` left-padded ``history`` without the positions of each row of ``combos``."""
    length, (count, size) = history.shape[0], combos.shape
    keep = torch.ones(count, length, dtype=torch.bool, device=history.device)
    keep[torch.arange(count, device=history.device)[:, None], combos] = False
    kept = history.expand(count, length)[keep].view(count, length - size)[:, -width:]
    rows = torch.zeros(count, width, dtype=history.dtype, device=history.device)
    rows[:, width - kept.shape[1] :] = kept
    return rows


def _by_single_drop(chosen: Tensor, drops: Tensor, positions: Tensor) -> Tensor:
    """``chosen`` positions ordered by their single-event drop, largest first (ties: most
    recent first)."""
    column = {int(p): c for c, p in enumerate(positions.tolist())}
    values = [(-float(drops[column[int(p)]]), -int(p)) for p in chosen.tolist()]
    order = sorted(range(len(values)), key=values.__getitem__)
    return chosen[torch.tensor(order, dtype=torch.long)]


@torch.no_grad()
def searched_group_deletion(
    model: Recommender,
    questions: Sequence[Question],
    width: int,
    max_events: int,
    size: int = 3,
) -> list[list[GroupDeletion]]:
    """Per question, per target: the searched ``size``-set (greedy picks among the
    candidates) as a :class:`~components.explain.group.GroupDeletion`: its events in order
    of single-event drop, each with its marginal drop given the earlier ones are gone and
    the target's rank change with them all removed (``size + 1`` rows re-scored)."""
    greedy = greedy_group_deletion(model, questions, width, max_events, size)
    extra = [[g.positions.tolist() for g in per_target] for per_target in greedy]
    found = best_deletion_sets(model, questions, width, size, POOL, extra, max_events)
    return [
        [
            _as_path(model, question, chosen, group, width)
            for chosen, group in zip(per_target, by_greedy, strict=True)
        ]
        for question, per_target, by_greedy in zip(questions, found, greedy, strict=True)
    ]


def _as_path(
    model: Recommender, question: Question, chosen: DeletionSet, group: GroupDeletion, width: int
) -> GroupDeletion:
    """``chosen`` removed one event at a time: marginal drops and rank changes."""
    device = model_device(model)
    rows = _prefix_rows(question.history[-width:], chosen.positions, width).to(device)
    types = None
    if question.events is not None:
        kinds = question.events[-width:]
        types = _prefix_rows(kinds, chosen.positions, width).to(device)
    block = score_rows(model, rows, types).float()
    scores = block[:, chosen.target]
    ranks = ranks_at(block, scores)
    return replace(
        group,
        positions=chosen.positions,
        drops=(scores[:-1] - scores[1:]).cpu(),
        rank_changes=(ranks[1:] - ranks[0]).cpu(),
    )


def _prefix_rows(history: Tensor, chosen: Tensor, width: int) -> Tensor:
    """``[m + 1, width]``: row ``k`` is ``history`` left-padded without the first ``k``
    positions of ``chosen``."""
    rows = torch.zeros(chosen.shape[0] + 1, width, dtype=history.dtype)
    keep = torch.ones(history.shape[0], dtype=torch.bool)
    for k in range(chosen.shape[0] + 1):
        if k:
            keep[int(chosen[k - 1])] = False
        kept = history.cpu()[keep][-width:]
        rows[k, width - kept.shape[0] :] = kept
    return rows
