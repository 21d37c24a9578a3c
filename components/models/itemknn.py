"""Item-based k-nearest-neighbours (Sarwar et al., WWW 2001), a cheap non-neural baseline.

Item-item cosine similarity over which users interacted with both items, shrunk towards
zero for rare pairs, keeping the ``neighbours`` most similar items per item. A history
scores each item by the summed similarity to the history items, weighted so recent items
count more (``recency_decay`` per step back).

Departures from the paper: the recency weighting (the paper treats a profile as a set),
and only the top ``neighbours`` similarities are kept so memory grows as ``n_items * k``.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from components.data.sequences import Sequences
from components.models.base import ModelParams, Recommender, mask_padding_column
from components.models.zoo import register


class ItemKNNParams(ModelParams):
    """ItemKNN hyperparameters."""

    neighbours: int = Field(100, ge=1, description="similar items kept per item")
    shrink: float = Field(10.0, ge=0, description="cosine shrinkage for rare co-occurrences")
    recency_decay: float = Field(
        0.8, gt=0, le=1, description="weight factor per step back in the history"
    )


def top_neighbours(
    train: Sequences, n_items: int, k: int, shrink: float, chunk: int = 2048
) -> tuple[Tensor, Tensor]:
    """``(indices, weights)``, each ``[n_items + 1, k]``: the ``k`` most cosine-similar items."""
    import scipy.sparse as sp  # here: serving imports the zoo, and never fits a model

    users = np.repeat(np.arange(len(train)), train.lengths)
    matrix = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, train.values)),
        shape=(len(train), n_items + 1),
    )
    matrix.data[:] = 1.0  # repeated interactions count once
    co = (matrix.T @ matrix).tocsr()
    norms = np.sqrt(co.diagonal()).astype(np.float32)
    k = min(k, n_items)
    indices = torch.zeros(n_items + 1, k, dtype=torch.long)
    weights = torch.zeros(n_items + 1, k)
    for start in range(0, n_items + 1, chunk):
        stop = min(start + chunk, n_items + 1)
        block = torch.from_numpy(co[start:stop].toarray())
        denom = (
            torch.from_numpy(norms[start:stop])[:, None] * torch.from_numpy(norms)[None] + shrink
        )
        block = block / denom.clamp(min=1e-9)
        block[torch.arange(stop - start), torch.arange(start, stop)] = 0.0
        block[:, 0] = 0.0
        top = block.topk(k, dim=1)
        indices[start:stop], weights[start:stop] = top.indices, top.values
    return indices, weights


@register("itemknn")
class ItemKNN(Recommender):
    """Recency-weighted sum of item-item cosine similarities."""

    Params = ItemKNNParams
    input_kind = "none"
    trainable = False
    neighbour_index: Tensor  # buffers: saved with the model
    neighbour_weight: Tensor

    def __init__(self, params: ItemKNNParams, n_items: int, n_users: int, max_len: int) -> None:
        super().__init__(params, n_items, n_users, max_len)
        k = min(params.neighbours, max(n_items, 1))
        self.register_buffer("neighbour_index", torch.zeros(n_items + 1, k, dtype=torch.long))
        self.register_buffer("neighbour_weight", torch.zeros(n_items + 1, k))

    def fit_data(self, train: Sequences) -> None:
        index, weight = top_neighbours(
            train, self.n_items, self.params.neighbours, self.params.shrink
        )
        self.neighbour_index = index.to(self.neighbour_index.device)
        self.neighbour_weight = weight.to(self.neighbour_weight.device)

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        b, length = histories.shape
        steps_back = torch.arange(length - 1, -1, -1, device=histories.device)
        recency = self.params.recency_decay ** steps_back.float()
        recency = recency[None] * (histories != 0)
        contrib = self.neighbour_weight[histories] * recency[:, :, None]
        scores = torch.zeros(b, self.n_items + 1, device=histories.device)
        scores.scatter_add_(
            1, self.neighbour_index[histories].reshape(b, -1), contrib.reshape(b, -1)
        )
        return mask_padding_column(scores)
