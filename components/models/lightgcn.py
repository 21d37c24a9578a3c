"""LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation
(He et al., SIGIR 2020).

User and item embeddings are smoothed over the symmetric-normalised user-item graph of
the training interactions (no feature transforms, no non-linearities); the final
embedding is the mean over propagation layers.

Departures from the paper:
- trained with full softmax cross-entropy of a user over all items by default (the
  paper uses BPR with one sampled negative; ``train.loss: bce`` is that objective);
  L2 regularisation comes from ``train.weight_decay``;
- scores from a history alone as well: when ``users`` is ``None`` or a user is unknown
  (index < 0 or beyond the training users) the user vector is the mean of the propagated
  embeddings of the history items (fold-in), so serving works with only a history;
- repeat-aware scoring (``seen_bias``): a training pair (user, item) sees the user's other
  training items (read from the graph's edges), so the offset learns how often an item a
  user already has is the one to predict; at inference it applies to the scored history.
  Without it a transductive model ranks the user's own training items first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from components.data.sequences import Sequences
from components.models.base import Recommender, SeenBiasParams, TrainingPairs, mask_padding_column
from components.models.zoo import register


class LightGCNParams(SeenBiasParams):
    """LightGCN hyperparameters."""

    embedding_size: int = Field(64, ge=8, description="user and item embedding width")
    num_layers: int = Field(3, ge=0, description="propagation layers")


def normalized_edges(train: Sequences, n_users: int, n_items: int) -> tuple[Tensor, Tensor]:
    """Edges of ``D^-1/2 A D^-1/2`` over nodes ``[users..., items 0..n_items]`` (both directions)."""
    users = np.repeat(np.arange(len(train)), train.lengths)
    pairs = np.unique(np.stack([users, train.values]), axis=1)
    user_nodes = pairs[0]
    item_nodes = pairs[1] + n_users
    src = np.concatenate([user_nodes, item_nodes])
    dst = np.concatenate([item_nodes, user_nodes])
    degree = np.bincount(src, minlength=n_users + n_items + 1).astype(np.float32)
    order = np.lexsort((dst, src))  # row-major order: the sparse matrix is born coalesced
    src, dst = src[order], dst[order]
    weight = 1.0 / np.sqrt(degree[src] * degree[dst])
    return torch.from_numpy(np.stack([src, dst]).astype(np.int64)), torch.from_numpy(weight)


@register("lightgcn")
class LightGCN(Recommender):
    """Graph-smoothed user/item embeddings; history fold-in for unknown users."""

    Params = LightGCNParams
    input_kind = "interaction_graph"

    def __init__(self, params: LightGCNParams, n_items: int, n_users: int, max_len: int) -> None:
        super().__init__(params, n_items, n_users, max_len)
        self.embeddings = nn.Embedding(n_users + n_items + 1, params.embedding_size)
        nn.init.normal_(self.embeddings.weight, std=0.1)
        self.register_buffer("edge_index", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("edge_weight", torch.zeros(0))
        self._propagated: tuple[Tensor, Tensor] | None = None

    def fit_data(self, train: Sequences) -> None:
        index, weight = normalized_edges(train, self.n_users, self.n_items)
        device = self.embeddings.weight.device
        self.edge_index = index.to(device)
        self.edge_weight = weight.to(device)
        self._propagated = None

    def propagate(self) -> tuple[Tensor, Tensor]:
        """``(users [U, D], items [n_items + 1, D])`` after mean-over-layers smoothing.

        In eval mode without gradients computed once and cached (dropped by ``train()``,
        a device move, loading weights or new graph data), as ``ItemInput`` caches its
        table: scoring a request is then a fold-in and one matrix product, and a recording
        of it (components/models/compiled.py) holds the tables as constants instead of a
        sparse product per request."""
        frozen = not self.training and not torch.is_grad_enabled()
        if frozen and self._propagated is not None:
            return self._propagated
        tables = self._propagate()
        if frozen:
            self._propagated = tables
        return tables

    def _propagate(self) -> tuple[Tensor, Tensor]:
        n_nodes = self.embeddings.num_embeddings
        adjacency = torch.sparse_coo_tensor(
            self.edge_index,
            self.edge_weight,
            (n_nodes, n_nodes),
            is_coalesced=True,
            check_invariants=False,
        )
        layer = self.embeddings.weight
        total = layer
        # sparse matmul has no reduced-precision kernels: keep it float32 under autocast
        with torch.autocast(layer.device.type, enabled=False):
            for _ in range(self.params.num_layers):
                layer = torch.sparse.mm(adjacency, layer.float())
                total = total + layer
        final = total / (self.params.num_layers + 1)
        return final[: self.n_users], final[self.n_users :]

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> LightGCN:
        self._propagated = None  # .to(device) / .half(): the cached tables are of the old kind
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> LightGCN:
        # valid while the module stays in eval mode (weights change in training or by a
        # state-dict load, which also drops it)
        if mode or self.training:
            self._propagated = None
        return super().train(mode)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._propagated = None
        super()._load_from_state_dict(*args, **kwargs)

    def training_items(self, users: Tensor) -> Tensor:
        """``[B, H]`` each user's training items (0-padded), read from the user->item edges:
        ``edge_index`` is sorted by source node, so a user's edges are one contiguous run."""
        src, dst = self.edge_index
        start = torch.searchsorted(src, users)
        end = torch.searchsorted(src, users, right=True)
        width = max(int((end - start).max()), 1) if len(users) else 1
        position = start[:, None] + torch.arange(width, device=src.device)[None]
        inside = position < end[:, None]
        items = dst[position.clamp(max=len(dst) - 1)] - self.n_users
        return items.masked_fill(~inside, 0)

    def training_pairs(self, batch: dict[str, Tensor]) -> TrainingPairs:
        users, items = self.propagate()
        seen = None
        if self.learns_seen_bias:
            owned = self.training_items(batch["users"])
            seen = owned.masked_fill(owned == batch["targets"][:, None], 0)
        return self.pairs(users[batch["users"]], batch["targets"], seen, item_table=items)

    def output_embeddings(self) -> Tensor:
        return self.propagate()[1]

    def _user_vectors(
        self, tables: tuple[Tensor, Tensor], histories: Tensor, users: Tensor | None
    ) -> Tensor:
        user_table, item_table = tables
        real = (histories != 0).float()[:, :, None]
        folded = (item_table[histories] * real).sum(1) / real.sum(1).clamp(min=1)
        if users is None or self.n_users == 0:
            return folded
        known = (users >= 0) & (users < self.n_users)
        from_graph = user_table[users.clamp(0, self.n_users - 1)]
        return torch.where(known[:, None], from_graph, folded)

    def encode(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        return self._user_vectors(self.propagate(), histories, users)

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        tables = self.propagate()
        scores = self._user_vectors(tables, histories, users) @ tables[1].T
        return mask_padding_column(self.add_seen_bias(scores, histories))
