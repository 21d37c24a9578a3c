"""Trainer settings shared by every neural model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Lightning's precision names recops accepts (a typo is a config error, not a crash later)
LightningPrecision = Literal["64-true", "32-true", "16-true", "16-mixed", "bf16-true", "bf16-mixed"]
#: ... plus "auto": bf16 autocast where the hardware computes bf16 natively, else fp32
#: (:func:`resolved_precision`)
Precision = LightningPrecision | Literal["auto"]

#: /proc/cpuinfo flags of x86 CPUs with native bf16 dot products (AVX-512 BF16, AMX)
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


class TrainConfig(BaseModel):
    """Optimisation, loss, early stopping and hardware settings for Lightning.

    Defaults are SASRec's session-7 Beauty settings: small batches of 64 sequences, Adam at
    1e-3 decayed x0.3 on a 2-epoch plateau of validation NDCG@10, early stopping after 5
    epochs without improvement, full-softmax CE over every position.
    configs/models/sasrec.yaml adds what session 8 measured on top (sampled softmax over
    1,024 negatives, the size-aware prefix recipe after 4 every-position epochs).
    """

    model_config = ConfigDict(extra="forbid")

    max_epochs: int = Field(200, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["ce", "bce", "sampled_softmax", "gbce"] = "ce"
    #: negatives per batch for the sampled losses (shared by every row of the batch)
    num_negatives: int = Field(100, ge=1)
    #: gBCE calibration t in [0, 1] (0 = plain BCE; gSASRec recommends 0.75 with 256 negatives)
    gbce_t: float = Field(0.75, ge=0, le=1)
    #: what one training example of a causal model is: "positions" (default) = a whole
    #: sequence, every position predicting its next item in one pass; "prefixes" = every
    #: prefix of every sequence is its own example, scored at its last position only (the
    #: BSARec / FMLP-Rec reference code's recipe: about 6x the encoder work per Beauty
    #: epoch, and the only way to train BSARec's whole-window filter, ``filter: window``)
    #: "auto" = the size-aware recipe: "prefixes" for a causal model when they cost at
    #: most ``prefix_cost_limit`` times the encoder tokens of "positions" (short histories:
    #: Beauty 8.6x, where prefixes lift SASRec's valid NDCG@10 by ~0.01), else "positions"
    #: (long histories: ml-100k 98x); see :func:`~components.training.datamodules.prefix_cost`
    samples: Literal["positions", "prefixes", "auto"] = "positions"
    prefix_cost_limit: float = Field(16.0, gt=0)
    #: with prefixes (chosen or by "auto"), train this many first epochs on "positions"
    #: (an epoch ~5x cheaper on Beauty, the fast early climb) and only then on prefixes
    positions_first_epochs: int = Field(0, ge=0)
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
    #: machines of a multi-node run (Lightning's ``num_nodes``; ``devices`` is per node)
    num_nodes: int = Field(1, ge=1)
    #: under ``strategy: ddp`` with more than one process (``devices`` x ``num_nodes``),
    #: each rank prepares only its own users (``data.engine`` stream or spark; the batch
    #: is bucketed once into ``data.bucket_dir``): see :mod:`components.training.ranks`
    shard_data: bool = False
    precision: Precision = "32-true"
    num_workers: int = Field(0, ge=0)
    eval_batch_size: int = Field(1024, ge=1)
    max_time_minutes: float | None = None
    progress_bar: bool = True
    check_val_every_n_epoch: int = Field(1, ge=1)
    #: when to validate (and so how far apart patience and LR-decay plateaus are):
    #: N = every N optimiser steps across epoch boundaries; None = every
    #: ``check_val_every_n_epoch`` epochs; "auto" (default) = derived from the data size by
    #: :func:`validation_interval`: every epoch, but at least ``val_min_steps`` steps apart
    #: (on ml-100k an epoch is ~15 steps and epoch-counted patience stopped models after a
    #: few dozen steps), and at least 10 times within ``max_epochs``.
    val_every_steps: int | Literal["auto"] | None = Field("auto")
    val_min_steps: int = Field(100, ge=1)
    deterministic: bool = False
    #: CPU threads for torch (None = torch's default). On a CPU shared with other jobs,
    #: fewer threads than cores avoids OpenMP oversubscription stalls.
    num_threads: int | None = Field(None, ge=1)

    @field_validator("val_every_steps")
    @classmethod
    def _positive_interval(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("val_every_steps must be >= 1, 'auto' or null")
        return value


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 dot products natively (``cpuinfo``: the text of
    ``/proc/cpuinfo``, read when None; False where it cannot be read, e.g. macOS). Without
    them bf16 autocast emulates the products and is slower than fp32."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                cpuinfo = handle.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool(BF16_CPU_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


def resolved_precision(precision: Precision, on_gpu: bool) -> LightningPrecision:
    """Lightning's precision for ``train.precision``: ``"auto"`` is ``bf16-mixed`` on a GPU
    that supports bf16 or a CPU with native bf16 (:func:`cpu_has_native_bf16`), else
    ``32-true``; any other value is returned as is.

    On Beauty (SASRec, one AVX-512 BF16 core) bf16 autocast cut the CPU time of a training
    epoch by 21-23 % with the same validation curve to 0.001 and the same converged test
    figure (see configs/models/sasrec.yaml); the final evaluation is always fp32."""
    if precision != "auto":
        return precision
    if on_gpu:
        import torch  # not at module level: loading a config must not import torch

        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def validation_interval(cfg: TrainConfig, steps_per_epoch: int) -> int | None:
    """Optimiser steps between validations (None = validate by epochs).

    ``"auto"``: every epoch (None) when an epoch has at least ``val_min_steps`` steps (Beauty
    with batch 64: 350 steps, so exactly as before); otherwise every ``val_min_steps``
    steps (ml-100k: 100 steps, ~7 epochs), capped so that the planned run (``max_epochs``
    epochs) still validates at least 10 times, and never more often than once an epoch.
    """
    if cfg.val_every_steps != "auto":
        return cfg.val_every_steps
    steps_per_epoch = max(int(steps_per_epoch), 1)
    planned = steps_per_epoch * cfg.max_epochs
    steps = min(cfg.val_min_steps, planned // 10)
    return steps if steps > steps_per_epoch else None
