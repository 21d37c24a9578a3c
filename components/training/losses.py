"""Training objectives over :class:`~components.models.base.TrainingPairs`.

- ``ce``: softmax cross-entropy over the whole catalogue (padding excluded) -- the default
  and the most accurate; cost grows with ``n_items``.
- ``sampled_softmax``: cross-entropy of the target against ``num_negatives`` items drawn
  uniformly and shared by the batch (uniform sampling needs no logQ correction; accidental
  hits of the target are masked).
- ``bce``: binary cross-entropy, target vs the same shared negatives (SASRec's and
  LightGCN/BPR-style training for very large catalogues).
- ``gbce``: gSASRec's generalised BCE (Petrov & Macdonald, RecSys 2023): BCE over the
  target and ``num_negatives`` shared negatives with the positive's probability raised to
  ``beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)``, ``alpha = K / (n_items - 1)`` the
  negative sampling rate and ``t`` (``train.gbce_t``) the calibration. ``t = 0`` is plain
  BCE; ``t = 1`` makes the sigmoid match the full-softmax probability in expectation,
  which removes the overconfidence that sampled BCE learns on popular items. Negatives
  are shared by the batch (one matmul) rather than drawn per position as in gSASRec.

Every objective adds the model's learned seen-item offsets (``pairs.seen_offsets``) to the
logits of items in ``pairs.seen``, so the offsets are trained by the same loss they serve.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from components.models.base import (
    SeenItems,
    TrainingPairs,
    add_seen_offset_,
    seen_offset_at,
    seen_offset_shared,
)


def full_cross_entropy(pairs: TrainingPairs) -> Tensor:
    logits = pairs.hidden @ pairs.item_table.T
    if pairs.seen is not None and pairs.seen_offsets is not None:
        add_seen_offset_(logits, pairs.seen, pairs.seen_offsets)
    logits[:, 0] = float("-inf")
    if pairs.candidates is not None:
        logits = logits.masked_fill(~pairs.candidates[None, :], float("-inf"))
    return F.cross_entropy(logits, pairs.targets)


def _seen_offset(pairs: TrainingPairs, candidates: Tensor) -> Tensor | float:
    """Seen-item offset ``[N, C]`` for candidate items ``[N, C]`` (one set per row) or
    ``[C]`` (shared by every row)."""
    if pairs.seen is None or pairs.seen_offsets is None:
        return 0.0
    seen = SeenItems(pairs.seen, pairs.seen_offsets)
    if candidates.dim() == 1:
        return seen_offset_shared(seen, candidates, pairs.item_table.shape[0])
    return seen_offset_at(seen, candidates)


def _positive_logits(pairs: TrainingPairs) -> Tensor:
    """``[N, 1]`` logit of each row's target."""
    positive = (pairs.hidden * pairs.item_table[pairs.targets]).sum(dim=1, keepdim=True)
    return positive + _seen_offset(pairs, pairs.targets[:, None])


def _shared_negatives(pairs: TrainingPairs, num_negatives: int) -> tuple[Tensor, Tensor]:
    """``(negative logits [N, K], accidental-hit mask [N, K])`` for K uniform negatives."""
    n_items = pairs.item_table.shape[0] - 1
    negatives = torch.randint(1, n_items + 1, (num_negatives,), device=pairs.hidden.device)
    logits = pairs.hidden @ pairs.item_table[negatives].T + _seen_offset(pairs, negatives)
    hit = negatives[None, :] == pairs.targets[:, None]
    if pairs.candidates is not None:  # items outside the candidates count as hits (masked)
        hit = hit | ~pairs.candidates[negatives][None, :]
    return logits, hit


def sampled_softmax(pairs: TrainingPairs, num_negatives: int) -> Tensor:
    positive = _positive_logits(pairs)
    negative, hit = _shared_negatives(pairs, num_negatives)
    logits = torch.cat([positive, negative.masked_fill(hit, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(pairs.targets))


def binary_cross_entropy(pairs: TrainingPairs, num_negatives: int) -> Tensor:
    positive = _positive_logits(pairs)[:, 0]
    negative, hit = _shared_negatives(pairs, num_negatives)
    neg_loss = -(F.logsigmoid(-negative) * ~hit).sum(dim=1) / (~hit).sum(dim=1).clamp(min=1)
    return (-F.logsigmoid(positive) + neg_loss).mean()


def gbce_beta(num_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's power on the positive probability for ``K`` negatives out of ``n_items``."""
    alpha = num_negatives / max(n_items - 1, 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def generalised_binary_cross_entropy(pairs: TrainingPairs, num_negatives: int, t: float) -> Tensor:
    """Mean over rows of ``(-beta log s(pos) - sum_k log(1 - s(neg_k))) / (1 + K')``, ``K'``
    the negatives that are not the row's target (gSASRec averages over all logits)."""
    n_items = pairs.item_table.shape[0] - 1
    beta = gbce_beta(num_negatives, n_items, t)
    positive = _positive_logits(pairs)[:, 0]
    negative, hit = _shared_negatives(pairs, num_negatives)
    neg_loss = -(F.logsigmoid(-negative) * ~hit).sum(dim=1)
    per_row = (-beta * F.logsigmoid(positive) + neg_loss) / (1 + (~hit).sum(dim=1))
    return per_row.mean()


def compute_loss(
    pairs: TrainingPairs, loss: str, num_negatives: int, gbce_t: float = 0.75
) -> Tensor:
    """The configured objective (``ce`` | ``sampled_softmax`` | ``bce`` | ``gbce``) for one
    batch; ``gbce_t`` is gBCE's calibration."""
    if loss == "gbce":
        return generalised_binary_cross_entropy(pairs, num_negatives, gbce_t)
    if loss == "ce":
        return full_cross_entropy(pairs)
    if loss == "sampled_softmax":
        return sampled_softmax(pairs, num_negatives)
    if loss == "bce":
        return binary_cross_entropy(pairs, num_negatives)
    raise ValueError(f"unknown loss {loss!r}")
