"""Building blocks shared by the Transformer models (SASRec, BERT4Rec).

A small pre-LayerNorm Transformer encoder over ``scaled_dot_product_attention`` with an
explicit boolean mask, so causal and bidirectional models share one implementation and
left padding is handled the same way everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from components.models.base import ModelParams


class TransformerParams(ModelParams):
    """Hyperparameters shared by the Transformer models (defaults suit Beauty-sized data)."""

    hidden_size: int = Field(64, ge=8, description="embedding and hidden width")
    num_layers: int = Field(2, ge=1, description="Transformer blocks")
    num_heads: int = Field(2, ge=1, description="attention heads (must divide hidden_size)")
    ffn_mult: int = Field(4, ge=1, description="feed-forward width as a multiple of hidden_size")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout on embeddings and residuals")
    attn_dropout: float = Field(0.2, ge=0, lt=1, description="dropout on attention weights")

    def encoder(self, vocab_size: int, max_len: int) -> TransformerEncoder:
        """The encoder these settings describe."""
        return TransformerEncoder(
            vocab_size, max_len, self.hidden_size, self.num_layers, self.num_heads,
            self.ffn_mult, self.dropout, self.attn_dropout,
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
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=histories.device).tril()
    return allowed


class TransformerBlock(nn.Module):
    """Pre-LN multi-head self-attention + GELU feed-forward, dropout on both residuals."""

    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float, attn_dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, dim // self.heads).unbind(2)
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(b, length, dim)))
        return x + self.drop(self.ffn(self.norm2(x)))


class TransformerEncoder(nn.Module):
    """Item + reversed-position embeddings, ``layers`` blocks, final LayerNorm."""

    def __init__(
        self, vocab_size: int, max_len: int, dim: int, layers: int, heads: int,
        ffn_mult: int, dropout: float, attn_dropout: float,
    ) -> None:
        super().__init__()
        self.items = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, ffn_mult, dropout, attn_dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, histories: Tensor, causal: bool) -> Tensor:
        """``[B, L, D]`` hidden states; inputs longer than ``max_len`` keep the last ``max_len``."""
        histories = histories[:, -self.positions.num_embeddings :]
        length = histories.shape[1]
        pos = torch.arange(length - 1, -1, -1, device=histories.device)
        x = self.drop(self.items(histories) + self.positions(pos)[None])
        mask = attention_mask(histories, causal)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)
