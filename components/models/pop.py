"""Most-popular baseline: every history gets the items ranked by training frequency.

The floor every learned model must clear (and what the gate compares against by
default). Fit by counting in :meth:`fit_data`, no gradient steps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from components.data.sequences import Sequences
from components.models.base import ModelParams, Recommender, mask_padding_column
from components.models.zoo import register


class PopParams(ModelParams):
    """Pop has no hyperparameters."""


@register("pop")
class Pop(Recommender):
    """Scores = training interaction counts, the same for every history."""

    Params = PopParams
    input_kind = "none"
    trainable = False
    uses_history = False
    counts: Tensor  # a buffer: saved with the model

    def __init__(self, params: PopParams, n_items: int, n_users: int, max_len: int) -> None:
        super().__init__(params, n_items, n_users, max_len)
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def fit_data(self, train: Sequences) -> None:
        counts = np.bincount(train.values, minlength=self.n_items + 1).astype(np.float32)
        self.counts = torch.from_numpy(counts).to(self.counts.device)

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        scores = self.counts[None].expand(histories.shape[0], -1).clone()
        return mask_padding_column(scores)
