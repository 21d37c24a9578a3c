"""Full-ranking evaluation: every target is ranked against ALL items, never a sample.

Conventions (the golden tests in ``tests/components/evaluation/test_metrics.py`` pin them):

- ranks are 0-based; ties are counted **pessimistically** (items scoring exactly the
  target's score rank ahead of it), so a constant scorer cannot look good;
- column 0 (padding) is never ranked;
- a target of 0 (an item the model has never seen) is a miss: rank = ``n_items``;
- with ``exclude_seen`` the history items are removed before ranking; a target that is
  also in the history then counts as a miss (it was excluded);
- ``hr@k`` = ``recall@k`` (one target per user), ``ndcg@k`` = ``1/log2(rank+2)`` when
  ``rank < k``, ``mrr`` = ``1/(rank+1)`` over the full ranking, ``coverage@k`` = share of the
  catalogue appearing in at least one user's top-k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import Tensor

from components.data.splits import EvalSet
from components.models.base import trim_left_padding

if TYPE_CHECKING:
    from components.models.bundle import ModelBundle

Scorer = Callable[[Tensor, "Tensor | None"], Tensor]


class HistoryScorer(Protocol):
    """A scorer that also reads the history's event types (a ModelBundle, a benchmark's
    oracle): ``score(histories, users, events) -> [B, n_items + 1]``."""

    def score(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor: ...


@dataclass
class EvalResult:
    """Averages in ``summary``; per-user values (aligned with the eval set) in ``per_user``."""

    summary: dict[str, float]
    per_user: dict[str, np.ndarray]
    exclude_seen: bool = False
    ranks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def exclude_items(scores: Tensor, items: Tensor) -> Tensor:
    """Set ``scores[b, items[b, j]]`` to ``-inf`` in place (index 0 = padding is already ``-inf``)."""
    return scores.scatter_(1, items, float("-inf"))


def rank_of_targets(scores: Tensor, targets: Tensor) -> Tensor:
    """0-based rank of each target among columns ``1..n`` of ``scores`` (pessimistic ties).

    ``scores`` is ``[B, n_items + 1]``; targets equal to 0 get rank ``n_items`` (a miss).
    """
    n_items = scores.shape[1] - 1
    real = scores[:, 1:]
    target_scores = scores.gather(1, targets[:, None])
    ahead = (real >= target_scores).sum(dim=1) - 1  # minus the target itself
    ahead = ahead.clamp(min=0)
    return torch.where(targets > 0, ahead, torch.full_like(ahead, n_items))


def by_history_length(histories: Tensor) -> Tensor:
    """Row order that sorts histories by their number of real items (stable)."""
    return torch.argsort((histories != 0).sum(dim=1), stable=True)


# --- metric names: the one place they are spelled ------------------------------------
MRR = "mrr"
N_USERS = "n_users"
#: the figures every summary shows first (run summary, logs, bento labels, tables)
HEADLINE_METRICS: tuple[str, ...] = ("hr@10", "ndcg@10", MRR)


def hr_key(k: int) -> str:
    return f"hr@{k}"


def recall_key(k: int) -> str:
    return f"recall@{k}"


def ndcg_key(k: int) -> str:
    return f"ndcg@{k}"


def coverage_key(k: int) -> str:
    return f"coverage@{k}"


def metric_order(ks: Sequence[int]) -> list[str]:
    """Every metric :func:`evaluate` reports for ``ks``, in display order."""
    return (
        [hr_key(k) for k in ks]
        + [ndcg_key(k) for k in ks]
        + [recall_key(k) for k in ks]
        + [MRR]
        + [coverage_key(k) for k in ks]
    )


def format_headline(metrics: dict[str, float]) -> str:
    """``hr@10=0.1234, ndcg@10=0.0567, mrr=0.0456`` (the headline metrics present)."""
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in HEADLINE_METRICS if k in metrics)


def per_user_metrics(ranks: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """HR/NDCG/Recall at each k and MRR for 0-based ``ranks``."""
    ranks_f = ranks.double()
    out: dict[str, Tensor] = {}
    for k in ks:
        hit = (ranks < k).double()
        out[hr_key(k)] = hit
        out[recall_key(k)] = hit
        out[ndcg_key(k)] = hit / torch.log2(ranks_f + 2)
    out[MRR] = 1.0 / (ranks_f + 1)
    return out


def _as_scorer(scorer: Scorer | ModelBundle | HistoryScorer) -> tuple[Scorer, torch.device | None]:
    score = getattr(scorer, "score", None)
    if score is not None:
        return score, getattr(scorer, "device", None)
    return scorer, None  # type: ignore[return-value]


@torch.no_grad()
def evaluate(
    scorer: Scorer | ModelBundle | HistoryScorer,
    eval_set: EvalSet,
    ks: Sequence[int] = (10,),
    exclude_seen: bool = False,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> EvalResult:
    """Rank every eval target against all items, in batches on ``device``.

    ``scorer(histories [B, L], users [B]) -> [B, n_items + 1]``, or a ModelBundle (its
    ``score``; the device defaults to the model's). Padding is never ranked; targets of 0
    count as misses (see the module docstring for every convention).
    """
    score, model_device = _as_scorer(scorer)
    # a bundle reads history event types (when its model uses them); a plain scorer never
    with_events = eval_set.events is not None and hasattr(scorer, "score")
    device = torch.device(device) if device is not None else (model_device or torch.device("cpu"))
    ks = sorted(set(int(k) for k in ks))
    users = torch.as_tensor(np.asarray(eval_set.users), dtype=torch.long)
    # Short histories batch together so their leading padding columns can be dropped.
    order = by_history_length(eval_set.histories)
    ranks_all: list[Tensor] = []
    seen_in_topk: Tensor | None = None
    n_items = 0
    for start in range(0, len(eval_set), batch_size):
        rows = order[start : start + batch_size]
        if with_events:
            assert eval_set.events is not None
            histories, events = trim_left_padding(
                eval_set.histories[rows].to(device), eval_set.events[rows].to(device)
            )
            scores = score(histories, users[rows].to(device), events).float()  # type: ignore[call-arg]
        else:
            (histories,) = trim_left_padding(eval_set.histories[rows].to(device))
            scores = score(histories, users[rows].to(device)).float()
        targets = eval_set.targets[rows].to(device)
        n_items = scores.shape[1] - 1
        scores[:, 0] = float("-inf")
        if exclude_seen:
            exclude_items(scores, histories)
        ranks_all.append(rank_of_targets(scores, targets).cpu())
        top = scores.topk(min(max(ks), n_items), dim=1).indices.cpu() if ks else None
        if top is not None:
            if seen_in_topk is None:
                seen_in_topk = torch.full((n_items + 1, len(ks)), False)
            for j, k in enumerate(ks):
                seen_in_topk[top[:, :k].reshape(-1), j] = True
    ranks = torch.zeros(len(eval_set), dtype=torch.long)
    if ranks_all:
        ranks[order] = torch.cat(ranks_all)
    metrics = per_user_metrics(ranks, ks)
    summary = {
        name: float(values.mean()) if len(values) else 0.0 for name, values in metrics.items()
    }
    if seen_in_topk is not None:
        for j, k in enumerate(ks):
            summary[coverage_key(k)] = float(seen_in_topk[1:, j].sum()) / max(n_items, 1)
    summary[N_USERS] = float(len(ranks))
    per_user = {name: values.numpy() for name, values in metrics.items()}
    return EvalResult(summary, per_user, exclude_seen, ranks.numpy())
