"""Per-epoch progress: one log line per validation and the history the run record keeps.

:class:`EpochProgress` is a Lightning callback. After every validation (every epoch, or
every ``train.val_every_steps`` steps) it appends one entry to :attr:`history` and logs
one line through ``components.training.progress`` (the same logger in a flow, ``recops
train`` and ``recops bench``; Prefect ships it to the UI)::

    epoch 3/15 loss 2.8712 valid ndcg@10 0.5540 hr@10 0.7800 elapsed 12s cpu 23s eta<=48s

``cpu`` is this process's CPU time (all threads) since training started: on a shared
machine wall time depends on everyone else's load, CPU time much less, so time-to-accuracy
comparisons between runs measured under different loads use it. ``eta`` is an upper bound: the time left if training ran to ``max_epochs`` (or
``max_time``) at the pace so far; early stopping usually ends it sooner. Where no progress
bar is drawn (stdout is not a terminal) it also logs a plain line every ``every_s``
seconds inside long epochs, so a log file never goes quiet for minutes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short, fixed vocabulary, no locale."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def epoch_line(entry: Mapping[str, float], max_epochs: int, k: int) -> str:
    """The one-line summary of a history entry (see the module docstring)."""
    loss = entry.get("train_loss")
    parts = [
        f"epoch {int(entry['epoch'])}/{max_epochs}",
        "loss -" if loss is None or not math.isfinite(loss) else f"loss {loss:.4f}",
        f"valid ndcg@{k} {entry[f'ndcg@{k}']:.4f} hr@{k} {entry[f'hr@{k}']:.4f}",
        f"elapsed {format_seconds(entry['elapsed_s'])}",
    ]
    if entry.get("cpu_s") is not None:
        parts.append(f"cpu {format_seconds(entry['cpu_s'])}")
    if entry.get("eta_s") is not None:
        parts.append(f"eta<={format_seconds(entry['eta_s'])}")
    return " ".join(parts)


def _batch_loss(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"].detach()
    return None


class EpochProgress(pl.Callback):
    """Record and log (epoch, mean train loss, valid NDCG/HR@K, elapsed, CPU, ETA) per validation.

    ``periodic`` adds a line every ``every_s`` seconds inside an epoch (for sinks without
    a progress bar). Only rank 0 logs; every rank records the same history.
    """

    def __init__(self, monitor_k: int, *, periodic: bool = False, every_s: float = 30.0) -> None:
        self.monitor_k = monitor_k
        self.periodic = periodic
        self.every_s = every_s
        self.history: list[dict[str, float]] = []
        self._started = 0.0
        self._cpu_started = 0.0
        self._last_line = 0.0
        self._loss_sum: torch.Tensor | None = None
        self._loss_n = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = self._last_line = time.perf_counter()
        self._cpu_started = time.process_time()
        self.history = []

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = _batch_loss(outputs)
        if loss is not None:
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._loss_n += 1
        now = time.perf_counter()
        if self.periodic and now - self._last_line >= self.every_s and trainer.is_global_zero:
            self._last_line = now
            log.info(
                "epoch %d/%d step %d/%s loss %.4f elapsed %s",
                trainer.current_epoch + 1,
                trainer.max_epochs,
                batch_idx + 1,
                trainer.num_training_batches,
                self._mean_loss(),
                format_seconds(now - self._started),
            )

    def _mean_loss(self) -> float:
        if self._loss_sum is None or self._loss_n == 0:
            return float("nan")
        return float(self._loss_sum) / self._loss_n

    def _eta(self, trainer: pl.Trainer, elapsed: float) -> float | None:
        step = trainer.global_step
        try:
            total = float(trainer.estimated_stepping_batches)
        except Exception:  # noqa: BLE001 - Lightning raises for unsized loaders
            return None
        if step <= 0 or not math.isfinite(total):
            return None
        eta = elapsed / step * max(total - step, 0.0)
        max_time = _max_time(trainer)
        if max_time is not None:
            eta = min(eta, max(max_time - elapsed, 0.0))
        return eta

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        k = self.monitor_k
        metrics = trainer.callback_metrics
        elapsed = time.perf_counter() - self._started if self._started else 0.0
        entry: dict[str, float] = {
            "epoch": float(trainer.current_epoch + 1),
            "step": float(trainer.global_step),
            "train_loss": self._mean_loss(),
            f"ndcg@{k}": float(metrics.get(f"valid_ndcg@{k}", float("nan"))),
            f"hr@{k}": float(metrics.get(f"valid_hr@{k}", float("nan"))),
            "elapsed_s": elapsed,
            "cpu_s": time.process_time() - self._cpu_started,
            # absolute clocks, for callers that count from before training started (the
            # accuracy benchmark counts data-dependent setup such as a warm start)
            "clock_s": time.perf_counter(),
            "process_cpu_s": time.process_time(),
        }
        if trainer.optimizers:
            entry["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        eta = self._eta(trainer, elapsed)
        if eta is not None:
            entry["eta_s"] = eta
        self.history.append(entry)
        self._loss_sum, self._loss_n = None, 0
        self._last_line = time.perf_counter()
        if trainer.is_global_zero:
            log.info("%s", epoch_line(entry, trainer.max_epochs or 0, k))


def _max_time(trainer: pl.Trainer) -> float | None:
    """Seconds of ``Trainer(max_time=...)``, when set."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        duration = getattr(callback, "_duration", None)
        if duration is not None:
            return float(duration)
    return None
