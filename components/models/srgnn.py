"""SR-GNN: Session-based Recommendation with Graph Neural Networks (Wu et al., AAAI 2019).

Each history becomes a small directed graph (nodes = distinct items, edges = consecutive
transitions, in/out adjacency normalised by degree); a gated graph network refines the
node embeddings; an attention readout combines the last item's node with a global
session vector to score the next item.

Departures from the paper:
- the user's whole (truncated) history is the "session";
- graphs are built for a whole padded batch at once as dense ``[B, L, L]`` adjacency over
  positions, with repeated items folded onto their first position (``alias``), instead
  of per-session Python graph construction;
- full softmax cross-entropy over all items (the paper's loss), trained on every prefix
  of every training sequence; sampled negatives are available through ``train.loss``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor, nn

from components.models.base import Recommender, SeenBiasParams, TrainingPairs
from components.models.zoo import register


class SRGNNParams(SeenBiasParams):
    """SR-GNN hyperparameters."""

    hidden_size: int = Field(64, ge=8, description="item embedding and node state width")
    steps: int = Field(1, ge=1, description="gated graph propagation steps")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout on item embeddings")


def session_graph(histories: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(alias [B, L], a_in [B, L, L], a_out [B, L, L])`` for left-padded histories.

    ``alias[b, t]`` is the first position holding the item at ``t``; edges join the aliases
    of consecutive real items; ``a_out`` is row-normalised by out-degree and ``a_in`` (the
    transpose) by in-degree, as in the paper.
    """
    b, length = histories.shape
    same = histories[:, :, None] == histories[:, None, :]
    alias = same.int().argmax(dim=2)
    real_step = (histories[:, :-1] != 0) & (histories[:, 1:] != 0)
    rows, steps = real_step.nonzero(as_tuple=True)
    adjacency = torch.zeros(b, length, length, device=histories.device)
    adjacency[rows, alias[rows, steps], alias[rows, steps + 1]] = 1.0
    a_out = adjacency / adjacency.sum(dim=2, keepdim=True).clamp(min=1)
    incoming = adjacency.transpose(1, 2)
    a_in = incoming / incoming.sum(dim=2, keepdim=True).clamp(min=1)
    return alias, a_in, a_out


@register("srgnn")
class SRGNN(Recommender):
    """Gated GNN over the session graph + soft-attention readout."""

    Params = SRGNNParams
    input_kind = "session_graph"

    def __init__(self, params: SRGNNParams, n_items: int, n_users: int, max_len: int) -> None:
        super().__init__(params, n_items, n_users, max_len)
        dim = params.hidden_size
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.drop = nn.Dropout(params.dropout)
        self.edge_in = nn.Linear(dim, dim)
        self.edge_out = nn.Linear(dim, dim)
        self.cell = nn.GRUCell(2 * dim, dim)
        self.w_last = nn.Linear(dim, dim)
        self.w_node = nn.Linear(dim, dim, bias=False)
        self.q = nn.Linear(dim, 1, bias=False)
        self.readout = nn.Linear(2 * dim, dim, bias=False)
        bound = 1.0 / math.sqrt(dim)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def _propagate(self, nodes: Tensor, a_in: Tensor, a_out: Tensor) -> Tensor:
        b, length, dim = nodes.shape
        for _ in range(self.params.steps):
            message = torch.cat([a_in @ self.edge_in(nodes), a_out @ self.edge_out(nodes)], dim=2)
            nodes = self.cell(message.reshape(-1, 2 * dim), nodes.reshape(-1, dim)).view(
                b, length, dim
            )
        return nodes

    def encode(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        histories = histories[:, -self.max_len :]
        alias, a_in, a_out = session_graph(histories)
        nodes = self._propagate(self.drop(self.items(histories)), a_in, a_out)
        seq = nodes.gather(1, alias[:, :, None].expand_as(nodes))
        last = seq[:, -1]
        weights = self.q(torch.sigmoid(self.w_last(last)[:, None] + self.w_node(seq)))
        weights = weights * (histories != 0)[:, :, None]
        global_ = (weights * seq).sum(dim=1)
        return self.readout(torch.cat([last, global_], dim=1))

    def output_embeddings(self) -> Tensor:
        return self.items.weight

    def training_pairs(self, batch: dict[str, Tensor]) -> TrainingPairs:
        return self.pairs(self.encode(batch["inputs"]), batch["targets"], batch["inputs"])
