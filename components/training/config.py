"""Trainer settings shared by every neural model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Lightning's precision names recops accepts (a typo is a config error, not a crash later)
Precision = Literal["64-true", "32-true", "16-true", "16-mixed", "bf16-true", "bf16-mixed"]


class TrainConfig(BaseModel):
    """Optimisation, loss, early stopping and hardware settings for Lightning.

    Defaults are SASRec's Beauty settings (configs/models/sasrec.yaml spells out the same
    values): small batches of 64 sequences, Adam at 1e-3 decayed x0.3 on a 2-epoch plateau
    of validation NDCG@10, early stopping after 5 epochs without improvement.
    """

    model_config = ConfigDict(extra="forbid")

    max_epochs: int = Field(200, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["ce", "bce", "sampled_softmax"] = "ce"
    num_negatives: int = Field(100, ge=1)
    patience: int = Field(5, ge=1)
    #: early stopping never ends training before this many optimiser steps (Lightning's
    #: ``min_steps``). It does not rescue small data: the LR has decayed by then (measured
    #: on ml-100k); ``val_every_steps`` is the setting for that.
    min_steps: int = Field(0, ge=0)
    #: multiply the learning rate by this when validation NDCG@K has not improved for
    #: ``lr_decay_patience`` validations (None = constant learning rate)
    lr_decay_factor: float | None = Field(0.3, gt=0, lt=1)
    lr_decay_patience: int = Field(2, ge=1)
    monitor_k: int = Field(10, ge=1)
    grad_clip: float | None = 5.0
    seed: int = 42
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    precision: Precision = "32-true"
    num_workers: int = Field(0, ge=0)
    eval_batch_size: int = Field(1024, ge=1)
    max_time_minutes: float | None = None
    progress_bar: bool = True
    check_val_every_n_epoch: int = Field(1, ge=1)
    #: validate every N optimiser steps instead of every epoch (across epoch boundaries);
    #: ``patience`` and ``lr_decay_patience`` then count these validations, so they mean
    #: the same amount of training whatever the dataset size (on ml-100k an epoch is a
    #: handful of steps and epoch-counted patience stops models after a few dozen)
    val_every_steps: int | None = Field(None, ge=1)
    deterministic: bool = False
    #: CPU threads for torch (None = torch's default). On a CPU shared with other jobs,
    #: fewer threads than cores avoids OpenMP oversubscription stalls.
    num_threads: int | None = Field(None, ge=1)
