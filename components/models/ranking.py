"""The one ranking rule every top-k in recops applies to a model's scores.

Kept apart (torch only, no data or pandas imports) so the bundle's ``top_k`` and the
serving path's compiled ranking (components/models/compiled.py, which records this
function into its trace or ONNX graph) are one definition.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rank_top_k(scores: Tensor, banned: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    """``(items [B, k], scores [B, k])``, best first, from ``scores [B, n_items + 1]``.

    ``banned [B, E]`` (item indices, padding 0 allowed) rank below every other real item
    and get score ``-inf``; padding (column 0) is never ranked above a real item. NaN and
    ``-inf`` scores rank just above banned items. ``k`` must be at most ``n_items``.
    """
    lowest = torch.finfo(scores.dtype).min
    # A fresh copy to rank in (``scores`` may be the model's own tensor); banned items
    # sit at lowest / 2, just above padding (lowest), so top-k never reaches padding,
    # and they are the only ranked values that low (NaN and -inf rank at lowest / 4).
    # One copy and in-place bans: a dense banned mask cost four more passes over the
    # catalogue per request.
    ranked = scores.nan_to_num(nan=lowest / 4, neginf=lowest / 4)
    if banned is not None:
        ranked.scatter_(1, banned.clamp(min=0), lowest / 2)
    ranked[:, 0] = lowest
    top = ranked.topk(k, dim=1)
    top_scores = scores.gather(1, top.indices).masked_fill(top.values <= lowest / 2, float("-inf"))
    return top.indices, top_scores
