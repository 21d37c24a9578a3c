"""GRU4Rec: Session-based Recommendations with Recurrent Neural Networks (Hidasi et al., ICLR 2016).

Item embeddings feed a GRU whose state at each step scores the next item.

Departures from the paper:
- trained on whole (left-padded) user histories with a loss at every position, not
  session-parallel mini-batches; full softmax cross-entropy by default (the paper's
  TOP1/BPR ranking losses are replaced by ``train.loss: bce``/``sampled_softmax``);
- an input embedding instead of one-hot inputs, and a projection to the tied item table;
- the GRU has no bias terms: with zero input and zero state a bias-free GRU stays at zero,
  so leading padding leaves the state untouched and never changes a score.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from components.models.base import CausalRecommender
from components.models.layers import ItemInput, ItemInputParams
from components.models.prefix import gru_deletion_states
from components.models.zoo import register


class GRU4RecParams(ItemInputParams):
    """GRU4Rec hyperparameters."""

    embedding_size: int = Field(64, ge=8, description="item embedding width")
    hidden_size: int = Field(128, ge=8, description="GRU state width")
    num_layers: int = Field(1, ge=1, description="stacked GRU layers")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout on embeddings and outputs")


@register("gru4rec")
class GRU4Rec(CausalRecommender):
    """A bias-free GRU over the history; its state is projected onto the item table."""

    Params = GRU4RecParams

    def __init__(self, params: GRU4RecParams, n_items: int, n_users: int, max_len: int) -> None:
        super().__init__(params, n_items, n_users, max_len)
        self.items = params.item_input(n_items, params.embedding_size)
        self.drop = nn.Dropout(params.dropout)
        self.gru = nn.GRU(
            params.embedding_size,
            params.hidden_size,
            num_layers=params.num_layers,
            batch_first=True,
            bias=False,
        )
        self.project = nn.Linear(params.hidden_size, params.embedding_size, bias=False)

    @property
    def item_input(self) -> ItemInput:
        return self.items

    def hidden_states(
        self, histories: Tensor, table: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        """``[B, L, E]``: the state after reading each position (causal by construction)."""
        table = self.items.table() if table is None else table
        out, _ = self.gru(self.drop(self.items(histories, table, events)))
        return self.project(self.drop(out))

    def encode_deletions(
        self, histories: Tensor, positions: Tensor, events: Tensor | None = None
    ) -> Tensor | None:
        """One-event deletions from the shared state before each deleted event
        (:func:`~components.models.prefix.gru_deletion_states`; exact: leading padding
        leaves a bias-free GRU at zero). None in training mode (dropout)."""
        if self.training or (not torch.jit.is_tracing() and histories.shape[1] > self.max_len):
            return None
        inputs = self.items(histories, self.items.table(), events)
        return self.project(gru_deletion_states(self.gru, inputs, positions))
