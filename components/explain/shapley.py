"""Shapley values of history events in the deletion game.

Players are the explained events (the ``max_events`` most recent of the scored history);
the value of a coalition ``S`` is the target's score when the history keeps the events of
``S`` (in their order) and every older, unexplained event, and drops the other explained
ones. An event's Shapley value is its marginal score change averaged over every order in
which the events could be added back, so a group of redundant events (three thrillers in a
row, any one of which carries the recommendation) shares the credit for what the group
does instead of each getting almost none, as it does under single-event deletion (each one
alone is replaceable by the other two). Values are in score units and, by the efficiency
property, sum to ``score(whole history) - score(no explained event)``.

Exact (every subset, ``2^E`` rows) when ``E <= exact_max``; otherwise estimated from
``permutations`` random orders (antithetic pairs: each order and its reverse), each costing
``E + 1`` rows (the order's prefixes). All targets of a history share those rows, so a
question with ten targets costs what one does. Every value is a re-scoring of real
counterfactual histories through the model's public ``score_all``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from components.explain.influence import (
    MAX_ROWS_PER_PASS,
    Question,
    is_explainable,
    model_device,
    score_rows,
)
from components.models.base import Recommender

METHOD = "shapley"
EXACT_MAX_EVENTS = 8


@dataclass(frozen=True)
class ShapleyValues:
    """``values [T, E]``: each explained event's Shapley value for each target;
    ``positions [E]`` index the scored history ``history`` (0 = oldest)."""

    explainable: bool
    exact: bool
    history: Tensor  # [L]
    positions: Tensor  # [E]
    targets: Tensor  # [T]
    values: Tensor  # [T, E]

    def top_events(self, target: int, n: int) -> list[int]:
        """Column indices of the ``n`` largest values for ``target`` (ties: most recent)."""
        row = self.values[target]
        if row.numel() == 0 or n <= 0:
            return []
        order = torch.argsort(row.flip(0), descending=True, stable=True)
        return (row.shape[0] - 1 - order)[: min(n, row.shape[0])].tolist()


def coalition_rows(history: Tensor, width: int, keep: Tensor) -> Tensor:
    """``[R, width]`` left-padded rows: row ``r`` is ``history`` with only the events where
    ``keep[r]`` (``[R, L]`` bool) is True, in their order."""
    kept = torch.where(keep, history[None], torch.zeros_like(history)[None])
    order = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices  # dropped first
    packed = kept.gather(1, order)
    length = history.shape[0]
    if length >= width:
        return packed[:, length - width :].contiguous()
    return torch.nn.functional.pad(packed, (width - length, 0))


def _exact_plan(n_events: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Every coalition ``[2^E, E]`` bool and the ``[E, 2^E]`` weights that turn their
    values into Shapley values: ``phi_j = sum_S w(S) (v(S + j) - v(S))`` over ``S`` not
    holding ``j``, ``w(S) = |S|! (E - |S| - 1)! / E!``."""
    codes = torch.arange(2**n_events, device=device)
    bits = (codes[:, None] >> torch.arange(n_events, device=device)[None]) & 1
    members = bits.bool()
    sizes = members.sum(dim=1)
    weights = torch.zeros(n_events, 2**n_events, device=device)
    factorial = [math.factorial(i) for i in range(n_events + 1)]
    for j in range(n_events):
        without = ~members[:, j]
        for code in torch.nonzero(without).flatten().tolist():
            size = int(sizes[code])
            w = factorial[size] * factorial[n_events - size - 1] / factorial[n_events]
            weights[j, code | (1 << j)] += w
            weights[j, code] -= w
    return members, weights


def _sampled_plan(
    n_events: int, permutations: int, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Prefix coalitions of ``permutations`` random orders (antithetic pairs) and the
    weights averaging each event's marginal over them."""
    orders = []
    for _ in range((permutations + 1) // 2):
        order = torch.randperm(n_events, generator=generator)
        orders += [order, order.flip(0)]
    members_rows, weights = [], torch.zeros(n_events, len(orders) * (n_events + 1))
    for index, order in enumerate(orders):
        prefix = torch.zeros(n_events + 1, n_events, dtype=torch.bool)
        for step in range(n_events):
            prefix[step + 1 :, order[step]] = True
            base = index * (n_events + 1)
            weights[order[step], base + step + 1] += 1.0 / len(orders)
            weights[order[step], base + step] -= 1.0 / len(orders)
        members_rows.append(prefix)
    return torch.cat(members_rows).to(device), weights.to(device)


@torch.no_grad()
def shapley_values(
    model: Recommender,
    questions: Sequence[Question],
    width: int,
    max_events: int,
    *,
    permutations: int = 8,
    exact_max: int = EXACT_MAX_EVENTS,
    seed: int = 0,
    max_rows: int = MAX_ROWS_PER_PASS,
) -> list[ShapleyValues]:
    """The :class:`ShapleyValues` of each question's ``max_events`` most recent events
    (exact when there are at most ``exact_max``, else from ``permutations`` sampled orders
    with a fixed ``seed``); ``width`` is the model's history length."""
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    explainable = is_explainable(model)
    out = []
    for question in questions:
        history = question.history.to(device)[-width:]
        length = history.shape[0]
        n_events = min(length, max_events) if explainable else 0
        exact = n_events <= exact_max
        if exact:
            members, weights = _exact_plan(n_events, device)
        else:
            members, weights = _sampled_plan(n_events, permutations, generator, device)
        keep = torch.ones(members.shape[0], length, dtype=torch.bool, device=device)
        keep[:, length - n_events :] = members
        kinds = None
        if question.events is not None:
            kinds = coalition_rows(question.events.to(device)[-width:], width, keep)
        values = _coalition_values(model, coalition_rows(history, width, keep), kinds, max_rows)
        targets = question.targets.to(device)
        phi = (weights @ values[:, targets]).T  # [T, E]
        out.append(
            ShapleyValues(
                explainable=explainable,
                exact=exact,
                history=history.cpu(),
                positions=torch.arange(length - n_events, length),
                targets=targets.cpu(),
                values=phi.cpu(),
            )
        )
    return out


def _coalition_values(
    model: Recommender, rows: Tensor, kinds: Tensor | None, max_rows: int
) -> Tensor:
    """``[R, C]`` scores of ``rows`` (event types ``kinds``), ``max_rows`` per forward pass."""
    parts = rows.split(max_rows)
    types = [None] * len(parts) if kinds is None else list(kinds.split(max_rows))
    return torch.cat(
        [score_rows(model, part, kind).float() for part, kind in zip(parts, types, strict=True)]
    )
