"""Building blocks shared by the Transformer models (SASRec, BERT4Rec).

A small pre-LayerNorm Transformer encoder over ``scaled_dot_product_attention`` with an
explicit boolean mask, so causal and bidirectional models share one implementation and
left padding is handled the same way everywhere.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from components.models.base import SeenBiasParams


class TransformerParams(SeenBiasParams):
    """Hyperparameters shared by the Transformer models (defaults suit Beauty-sized data)."""

    hidden_size: int = Field(64, ge=8, description="embedding and hidden width")
    num_layers: int = Field(2, ge=1, description="Transformer blocks")
    num_heads: int = Field(2, ge=1, description="attention heads (must divide hidden_size)")
    ffn_mult: int = Field(4, ge=1, description="feed-forward width as a multiple of hidden_size")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout on embeddings and residuals")
    attn_dropout: float = Field(0.2, ge=0, lt=1, description="dropout on attention weights")
    positions_from: Literal["first", "last"] = Field(
        "last",
        description="position 0 is the oldest item in the window ('first': a causal model's "
        "hidden state at step t then sees exactly what inference on that prefix sees) or the "
        "most recent one ('last')",
    )
    norm_first: bool = Field(
        True,
        description="pre-LN blocks (True) or post-LN blocks with a LayerNorm on the embeddings (False)",
    )
    layer_norm_eps: float = Field(1e-5, gt=0, description="LayerNorm epsilon")
    linear_init_std: float | None = Field(
        None,
        gt=0,
        description="normal init std for linear weights (biases zero); None = torch default",
    )

    def encoder(self, vocab_size: int, max_len: int) -> TransformerEncoder:
        """The encoder these settings describe."""
        return TransformerEncoder(
            vocab_size,
            max_len,
            self.hidden_size,
            self.num_layers,
            self.num_heads,
            self.ffn_mult,
            self.dropout,
            self.attn_dropout,
            positions_from=self.positions_from,
            norm_first=self.norm_first,
            eps=self.layer_norm_eps,
            linear_init_std=self.linear_init_std,
        )


def attention_mask(histories: Tensor, causal: bool) -> Tensor:
    """``[B, 1, L, L]`` bool mask (True = may attend).

    Keys that are padding are hidden; every position may always attend to itself so a
    padding query has one finite key (its output is never used) and no row is all-masked.
    """
    length = histories.shape[1]
    real_key = (histories != 0)[:, None, None, :]  # [B,1,1,L]
    eye = torch.eye(length, dtype=torch.bool, device=histories.device)
    allowed = real_key | eye
    if causal:
        allowed = (
            allowed & torch.ones(length, length, dtype=torch.bool, device=histories.device).tril()
        )
    return allowed


class TransformerBlock(nn.Module):
    """Multi-head self-attention + GELU feed-forward, dropout on both residuals.

    Pre-LN (``x + f(norm(x))``) by default; post-LN (``norm(x + f(x))``, BERT/RecBole style)
    with ``norm_first=False``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_mult: int,
        dropout: float,
        attn_dropout: float,
        norm_first: bool = True,
        eps: float = 1e-5,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_mult * dim, dim),
        )
        self.drop = nn.Dropout(dropout)

    def _attend(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).unbind(2)
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        return self.drop(self.proj(attended.transpose(1, 2).reshape(b, length, dim)))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.norm_first:
            x = x + self._attend(self.norm1(x), mask)
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self._attend(x, mask))
        return self.norm2(x + self.drop(self.ffn(x)))


class TransformerEncoder(nn.Module):
    """Item + position embeddings, ``layers`` blocks, one LayerNorm.

    Pre-LN: the LayerNorm is applied to the output; post-LN: to the summed embeddings.
    Positions count from the oldest real item of the window (``positions_from="first"``)
    or from the most recent one (``"last"``); either way left padding never changes a score.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        dim: int,
        layers: int,
        heads: int,
        ffn_mult: int,
        dropout: float,
        attn_dropout: float,
        positions_from: str = "last",
        norm_first: bool = True,
        eps: float = 1e-5,
        linear_init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.positions_from = positions_from
        self.norm_first = norm_first
        self.items = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, ffn_mult, dropout, attn_dropout, norm_first, eps)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim, eps=eps)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()
        if linear_init_std is not None:
            for module in self.blocks.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=linear_init_std)
                    nn.init.zeros_(module.bias)

    def forward(self, histories: Tensor, causal: bool) -> Tensor:
        """``[B, L, D]`` hidden states; inputs longer than ``max_len`` keep the last ``max_len``."""
        histories = histories[:, -self.positions.num_embeddings :]
        x = self.items(histories) + self.positions(self.position_ids(histories))
        x = self.drop(x if self.norm_first else self.norm(x))
        mask = attention_mask(histories, causal)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) if self.norm_first else x

    def position_ids(self, histories: Tensor) -> Tensor:
        """``[B, L]`` (or ``[1, L]``) position index of every column; padding gets 0."""
        length = histories.shape[1]
        steps = torch.arange(length, device=histories.device)
        if self.positions_from == "last":
            return (length - 1 - steps)[None]
        padding = (histories == 0).sum(dim=1, keepdim=True)
        return (steps[None] - padding).clamp(min=0)
