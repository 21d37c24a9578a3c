"""Integrated gradients over history item embeddings: a second, gradient-based attribution.

Deletion (:mod:`components.explain.influence`) is the default and the reference; this
method is offered for comparison (``recops bench explain`` measures both against the same
3-event deletions) and is **not** assumed to be right.

Integrated gradients (Sundararajan et al., ICML 2017) attribute ``f(x) - f(baseline)`` to
the inputs by integrating gradients along the straight path from the baseline; here the
inputs are the item embeddings of the history (baseline: all zero, the padding vector)
and ``f`` is the target item's score. The attribution of an event is
``sum_d x_d * mean_alpha(df/dx_d at alpha * x)`` (right Riemann sum over ``steps``).

Model-agnostic by forward hooks: the first module to finish whose input is the scored
history itself and whose output is ``[B, L, D]`` floats (an ``nn.Embedding``, or the
shared ``ItemInput`` layer of the sequence models) is scaled along the path; modules
finish inner first, so an encoder that also reads the history is never the one scaled.
Models without such a layer (``itemknn``, ``pop``, LightGCN's graph tables, BERT4Rec which
appends a mask token) get ``None``: gradient attribution does not apply to them, deletion
does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from components.models.base import Recommender


def _scaling_hook(
    batch: Tensor, alphas: Tensor, found: list[Tensor]
) -> Callable[[nn.Module, Any, Tensor], Tensor | None]:
    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        ids = inputs[0] if inputs else None
        if (
            found
            or not isinstance(ids, Tensor)
            or ids.shape != batch.shape
            or not isinstance(output, Tensor)
            or output.dim() != 3
            or not output.is_floating_point()
            or not torch.equal(ids, batch)
        ):
            return None
        scaled = (output.detach() * alphas[:, None, None]).requires_grad_(True)
        found.append(output.detach()[0])
        found.append(scaled)
        return scaled

    return hook


def integrated_gradients(
    model: Recommender, history: Tensor, target: int, width: int, steps: int = 16
) -> Tensor | None:
    """``[L]`` attribution of each event of ``history`` (oldest first, no padding) to the
    score of ``target``; ``None`` when the model has no history item embedding."""
    history = history[-width:]
    row = torch.zeros(width, dtype=torch.long, device=history.device)
    row[width - len(history) :] = history
    batch = row.expand(steps, -1).contiguous()
    alphas = torch.arange(1, steps + 1, dtype=torch.float32, device=row.device) / steps
    found: list[Tensor] = []
    hooks = [
        module.register_forward_hook(_scaling_hook(batch, alphas, found))
        for module in model.modules()
        if module is not model
    ]
    try:
        with torch.enable_grad():
            scores = model.score_all(batch)
            if len(found) < 2:
                return None
            embedded, scaled = found
            (grads,) = torch.autograd.grad(scores[:, target].sum(), scaled)
    finally:
        for handle in hooks:
            handle.remove()
    per_position = (embedded * grads.mean(dim=0)).sum(dim=1)
    return per_position[width - len(history) :].detach()
