"""``recops bench step``: where a training step's time goes, and what the usual levers buy.

For one model (``configs/models/<name>.yaml`` over the defaults, plus ``--set``) on one
dataset, time training steps in every combination of batch size and precision (fp32, or
bf16 autocast on the CPU). Each step is split into its phases:

- ``collate``: gathering the batch tensors from the pre-tensorised dataset;
- ``encode``: the model's forward pass to representations (:meth:`training_pairs`);
- ``loss``: logits against the item table and the loss (full-catalogue softmax for CE);
- ``backward``: backward pass + optimiser step.

Variants run interleaved, one step each per round, so a change in machine load hits every
variant alike; figures are medians over rounds after warm-up. Reported per variant:
milliseconds per step and per phase, predicted positions (targets) per second, and the
loss after the timed steps (a sanity check that the variant trains, not an accuracy claim).
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.accuracy import _model_config

PHASES = ("collate", "encode", "loss", "backward")


@dataclass
class _Variant:
    batch_size: int
    precision: str
    model: Any
    optimiser: torch.optim.Optimizer
    batches: list[list[int]]
    times: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    targets: list[int] = field(default_factory=list)
    last_loss: float = float("nan")

    @property
    def name(self) -> str:
        return f"b{self.batch_size} {self.precision}"


def _autocast(precision: str) -> Any:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def _time_step(variant: _Variant, data: Any, batch_index: list[int], cfg: Any) -> None:
    from components.training.losses import compute_loss

    marks = [time.perf_counter()]
    batch = data[batch_index]
    marks.append(time.perf_counter())
    with _autocast(variant.precision):
        pairs = variant.model.training_pairs(batch)
        marks.append(time.perf_counter())
        loss = compute_loss(pairs, cfg.loss, cfg.num_negatives, cfg.gbce_t)
        marks.append(time.perf_counter())
    variant.optimiser.zero_grad(set_to_none=True)
    loss.backward()
    variant.optimiser.step()
    marks.append(time.perf_counter())
    for phase, start, end in zip(PHASES, marks[:-1], marks[1:], strict=True):
        variant.times[phase].append(end - start)
    variant.targets.append(len(pairs.targets))
    variant.last_loss = float(loss.detach())


def _variants(
    prepared: Any, cfg: Any, batch_sizes: list[int], precisions: list[str], steps: int
) -> tuple[list[_Variant], Any]:
    from components.lifecycle.train import item_features
    from components.training.datamodules import BucketBatchSampler, training_dataset
    from components.training.trainer import build_bundle
    from components.workspace import Workspace

    data, lengths = training_dataset("causal", prepared.split.train, prepared.split.max_len)
    content = item_features(Workspace.at(cfg.workspace), cfg, prepared)
    variants = []
    for batch_size in batch_sizes:
        batches = list(BucketBatchSampler(lengths, batch_size, True, cfg.train.seed))
        for precision in precisions:
            torch.manual_seed(cfg.train.seed)
            model = build_bundle(prepared, cfg.model, content).model.train()
            lr = cfg.train.lr * (batch_size / cfg.train.batch_size) ** 0.5
            optimiser = torch.optim.Adam(model.parameters(), lr=lr)
            variants.append(_Variant(batch_size, precision, model, optimiser, batches[:steps]))
    return variants, data


def run_step_benchmark(
    data_path: Path,
    fmt: str,
    model: str,
    *,
    batch_sizes: list[int],
    precisions: list[str],
    steps: int = 20,
    warmup: int = 3,
    overrides: list[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per (batch size, precision); causal models only (their batches are built here)."""
    from components.lifecycle.prepare import prepare_dataset
    from components.models.zoo import get_model_class

    cfg = _model_config(model, Path(data_path), fmt, None, overrides or [])
    if get_model_class(model).input_kind != "causal":
        raise ValueError(f"bench step times causal models; {model} is not one")
    if cfg.train.num_threads is not None:
        torch.set_num_threads(cfg.train.num_threads)
    prepared = prepare_dataset(cfg.data)
    variants, data = _variants(prepared, cfg, batch_sizes, precisions, steps + warmup)
    for step in range(steps + warmup):
        for variant in variants:
            _time_step(variant, data, variant.batches[step % len(variant.batches)], cfg.train)
    return [_row(v, warmup, model, cfg) for v in variants]


def _row(variant: _Variant, warmup: int, model: str, cfg: Any) -> dict[str, Any]:
    ms = {p: 1000 * statistics.median(variant.times[p][warmup:]) for p in PHASES}
    step_ms = sum(ms.values())
    targets = statistics.median(variant.targets[warmup:])
    return {
        "model": model,
        "loss_fn": cfg.train.loss,
        "batch_size": variant.batch_size,
        "precision": variant.precision,
        "lr": variant.optimiser.param_groups[0]["lr"],
        "step_ms": step_ms,
        **{f"{p}_ms": ms[p] for p in PHASES},
        "targets_per_step": targets,
        "targets_per_s": targets / (step_ms / 1000),
        "loss_after": variant.last_loss,
        "timed_steps": len(variant.times["encode"]) - warmup,
        "torch_threads": torch.get_num_threads(),
    }


def format_step_table(rows: list[dict[str, Any]]) -> str:
    """The human-readable table (same figures as the JSON)."""
    header = (
        f"{'variant':<12}{'step ms':>9}{'collate':>9}{'encode':>8}{'loss':>8}{'backward':>10}"
        f"{'targets/s':>11}{'lr':>9}{'loss after':>12}"
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"{'b' + str(r['batch_size']) + ' ' + r['precision']:<12}{r['step_ms']:>9.1f}"
            f"{r['collate_ms']:>9.1f}{r['encode_ms']:>8.1f}{r['loss_ms']:>8.1f}{r['backward_ms']:>10.1f}"
            f"{r['targets_per_s']:>11,.0f}{r['lr']:>9.2g}{r['loss_after']:>12.3f}"
        )
    lines.append(
        "medians over interleaved steps after warm-up; 'loss': logits + loss (CE: full-catalogue "
        "softmax); lr scaled by sqrt(batch / configured batch)"
    )
    return "\n".join(lines)
