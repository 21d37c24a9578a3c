"""One LightningModule for every registered backbone.

It owns the optimiser, the loss (``train.loss``) and full-ranking validation; the
backbone (a :class:`~components.models.base.Recommender`) only maps batches to
representations and scores. Validation logs ``valid_ndcg@K`` / ``valid_hr@K`` (K =
``train.monitor_k``) for early stopping and checkpointing, reduced over DDP ranks; the
per-epoch history and progress lines are :class:`~components.training.progress.EpochProgress`'s.
"""

from __future__ import annotations

import time
from typing import Any, cast

import lightning.pytorch as pl
import torch
from torch import Tensor

from components.evaluation.metrics import exclude_items, per_user_metrics, rank_of_targets
from components.models.base import Recommender
from components.training.config import TrainConfig
from components.training.losses import compute_loss


def rank_within(scores: Tensor, targets: Tensor, k: int) -> Tensor:
    """0-based rank of each target among columns ``1..n`` of ``scores``, capped at ``k``
    (``k`` = outside the top ``k``; a target of 0 is a miss): equal to
    ``rank_of_targets(...).clamp(max=k)``, pessimistic ties included, from one top-(k+1)
    per row instead of comparing every score with the target's (on Beauty's 12,101 items
    the comparison was a third of a validation's CPU time, the top-(k+1) a sixth).

    A target ranks below ``k`` iff the (k+1)-th best score is below it; then its rank is
    the number of top-k scores at least equal to it, minus itself."""
    real = scores[:, 1:]
    if k + 1 > real.shape[1]:
        return rank_of_targets(scores, targets).clamp(max=k)
    target_scores = scores.gather(1, targets[:, None])
    best = real.topk(k + 1, dim=1).values
    ahead = (best[:, :k] >= target_scores).sum(dim=1) - 1
    inside = (best[:, k] < target_scores[:, 0]) & (targets > 0)
    return torch.where(inside, ahead.clamp(min=0), torch.full_like(ahead, k))


class RecommenderModule(pl.LightningModule):
    """Wraps a backbone: training loss, optimiser, validation NDCG/HR@K."""

    def __init__(self, model: Recommender, cfg: TrainConfig, exclude_seen: bool = False) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.exclude_seen = exclude_seen
        self.monitor = f"valid_ndcg@{cfg.monitor_k}"
        self.samples_seen = 0  # training examples (sequences, prefixes or pairs)
        self.targets_seen = 0  # predicted positions (several per sequence for causal/masked)
        self.train_seconds = 0.0
        self._fit_started = 0.0
        self._epoch_started = 0.0
        self._valid_sums: Tensor | None = None
        self._valid_started = 0.0
        self._valid_seconds = 0.0

    # --- training ---------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._fit_started = time.perf_counter()

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        pairs = self.model.training_pairs(batch)
        loss = compute_loss(pairs, self.cfg.loss, self.cfg.num_negatives, self.cfg.gbce_t)
        self.samples_seen += len(next(iter(batch.values())))
        self.targets_seen += len(pairs.targets)
        self.log(
            "train_loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=len(pairs.targets),
        )
        return loss

    def on_train_epoch_end(self) -> None:
        # Lightning validates before this hook; validation time is not training time.
        self.train_seconds += time.perf_counter() - self._epoch_started - self._valid_seconds
        self._valid_seconds = 0.0

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )
        if self.cfg.lr_decay_factor is None:
            return optimizer
        # a high learning rate gets to good accuracy fast; decaying it on a validation
        # plateau then removes the noise that caps the peak
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=self.cfg.lr_decay_factor,
            patience=self.cfg.lr_decay_patience - 1,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.monitor,
                "strict": False,
                # step with the validations that feed it
                "interval": "step" if self.cfg.val_every_steps else "epoch",
                "frequency": self.cfg.val_every_steps or 1,
            },
        }

    # --- validation -------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._valid_started = time.perf_counter()
        self._valid_sums = torch.zeros(3, device=self.device, dtype=torch.float64)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        histories = batch["histories"]
        scores = self.model.score_all(histories, batch["users"], batch.get("events")).float()
        scores[:, 0] = float("-inf")
        if self.exclude_seen:
            exclude_items(scores, histories)
        k = self.cfg.monitor_k
        metrics = per_user_metrics(rank_within(scores, batch["targets"], k), [k])
        assert self._valid_sums is not None
        self._valid_sums += torch.stack(
            [
                metrics[f"ndcg@{k}"].sum(),
                metrics[f"hr@{k}"].sum(),
                torch.tensor(len(histories), dtype=torch.float64, device=self.device),
            ]
        )

    def on_validation_epoch_end(self) -> None:
        assert self._valid_sums is not None
        sums = cast(Tensor, self.all_gather(self._valid_sums))
        if sums.dim() > 1:
            sums = sums.sum(dim=0)
        count = float(sums[2].clamp(min=1))
        ndcg, hr = float(sums[0]) / count, float(sums[1]) / count
        k = self.cfg.monitor_k
        self.log(self.monitor, ndcg, prog_bar=True, sync_dist=False)
        self.log(f"valid_hr@{k}", hr, prog_bar=False, sync_dist=False)
        self._valid_seconds += time.perf_counter() - self._valid_started
