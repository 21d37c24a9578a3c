"""LRURec: Linear Recurrent Units for Sequential Recommendation (Yue et al., WSDM 2024;
reference code yueqirex/LRURec).

Item embeddings (LayerNorm after dropout, no position embeddings: the recurrence knows
order) feed ``num_layers`` blocks of

- a linear recurrent unit: ``h_t = lambda * h_{t-1} + gamma * B x_t`` with a diagonal
  complex ``lambda = exp(-nu + i theta)`` (``|lambda|`` initialised in ``[r_min, r_max]``,
  phases in ``[0, 2 pi)``), ``gamma = sqrt(1 - |lambda|^2)`` normalisation, output
  ``LayerNorm(x + dropout(Re(C h_t)))``;
- a GELU position-wise feed-forward, post-LN.

Training computes all states at once with a log-depth parallel scan
(``h_t += lambda^(2^k) h_{t - 2^k}`` for ``k = 0 .. ceil(log2 L) - 1``); inference can run
the same recurrence one item at a time (:meth:`LRURec.hidden_states` with
``recurrent=True``, equal to the scan to float precision; a test checks it), which is what
makes a streaming update O(1) per new event.

Departures from the reference code:

- complex numbers are carried as (real, imaginary) pairs of real tensors, so ``B`` and
  ``C`` are real linear maps onto/from ``2 x state`` channels: the same function class
  (a complex matrix acting on real inputs) without complex parameters, which keeps
  gradient clipping, Adam and mixed precision on their tested real paths;
- padding contributes nothing: the recurrence input ``gamma * B x`` is zeroed at padding
  positions, so left padding never changes a state (the reference masks the carry);
- items enter through the shared :class:`~components.models.layers.ItemInput` (N(0, 0.02)
  id embeddings; optionally text / category / event-type inputs);
- no output bias per item; repeat-aware scoring (``seen_bias``) on by default, as for
  the other sequence models; CE over all items at every position.

Reference Beauty settings kept: 64 dimensions, 2 blocks, state 2 x 64, ``r`` in
[0.8, 0.99], truncated-normal(0.02) init of the blocks' weights except LayerNorms and
the recurrence parameters.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor, nn

from components.models.base import CausalRecommender
from components.models.layers import ItemInput, ItemInputParams
from components.models.zoo import register


class LRURecParams(ItemInputParams):
    """LRURec hyperparameters (defaults: the reference's Beauty settings)."""

    hidden_size: int = Field(64, ge=8, description="embedding and hidden width")
    num_layers: int = Field(2, ge=1, description="LRU blocks")
    state_mult: int = Field(2, ge=1, description="complex state size as a multiple of hidden_size")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout on embeddings and feed-forward")
    recurrent_dropout: float = Field(0.5, ge=0, lt=1, description="dropout on the LRU output")
    r_min: float = Field(0.8, gt=0, lt=1, description="smallest initial |lambda| (fast decay)")
    r_max: float = Field(0.99, gt=0, lt=1, description="largest initial |lambda| (long memory)")
    init_std: float = Field(0.02, gt=0, description="truncated-normal std of the weights")


def parallel_scan(
    u_re: Tensor, u_im: Tensor, lam_re: Tensor, lam_im: Tensor
) -> tuple[Tensor, Tensor]:
    """States of ``h_t = lambda * h_{t-1} + u_t`` (``h_{-1} = 0``) for ``u [B, L, H]`` as
    real/imaginary parts, in ``ceil(log2 L)`` vectorised steps (Hillis-Steele scan)."""
    length = u_re.shape[1]
    h_re, h_im = u_re, u_im
    p_re, p_im = lam_re, lam_im  # lambda ** (2 ** k)
    shift = 1
    while shift < length:
        prev_re, prev_im = h_re[:, :-shift], h_im[:, :-shift]
        add_re = p_re * prev_re - p_im * prev_im
        add_im = p_re * prev_im + p_im * prev_re
        zeros = h_re.new_zeros(h_re.shape[0], shift, h_re.shape[2])
        h_re = h_re + torch.cat([zeros, add_re], dim=1)
        h_im = h_im + torch.cat([zeros, add_im], dim=1)
        p_re, p_im = p_re * p_re - p_im * p_im, 2 * p_re * p_im
        shift *= 2
    return h_re, h_im


def sequential_scan(
    u_re: Tensor, u_im: Tensor, lam_re: Tensor, lam_im: Tensor
) -> tuple[Tensor, Tensor]:
    """The same states one step at a time (the recurrent form used to stream events)."""
    h_re = u_re.new_zeros(u_re.shape[0], u_re.shape[2])
    h_im = torch.zeros_like(h_re)
    out_re, out_im = [], []
    for t in range(u_re.shape[1]):
        h_re, h_im = (
            lam_re * h_re - lam_im * h_im + u_re[:, t],
            lam_re * h_im + lam_im * h_re + u_im[:, t],
        )
        out_re.append(h_re)
        out_im.append(h_im)
    return torch.stack(out_re, dim=1), torch.stack(out_im, dim=1)


class LRULayer(nn.Module):
    """``LayerNorm(x + dropout(Re(C h)))`` over the linear recurrence of ``gamma * B x``."""

    def __init__(self, dim: int, state: int, dropout: float, r_min: float, r_max: float) -> None:
        super().__init__()
        radius_sq = torch.rand(state) * (r_max**2 - r_min**2) + r_min**2
        nu_log = torch.log(-0.5 * torch.log(radius_sq))
        theta_log = torch.log(torch.rand(state) * 2 * math.pi)
        gamma_log = torch.log(torch.sqrt(1 - radius_sq))
        self.params_log = nn.Parameter(torch.stack([nu_log, theta_log, gamma_log]))
        self.in_proj = nn.Linear(dim, 2 * state)
        self.out_proj = nn.Linear(2 * state, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, real: Tensor, recurrent: bool = False) -> Tensor:
        """``x [B, L, D]``; ``real [B, L, 1]`` is 0 at padding, whose input is dropped so it
        never enters a state."""
        nu, theta, gamma = torch.exp(self.params_log)
        magnitude = torch.exp(-nu)
        lam_re, lam_im = magnitude * torch.cos(theta), magnitude * torch.sin(theta)
        u_re, u_im = (self.in_proj(x) * gamma.repeat(2) * real).chunk(2, dim=-1)
        scan = sequential_scan if recurrent else parallel_scan
        h_re, h_im = scan(u_re, u_im, lam_re, lam_im)
        return self.norm(x + self.drop(self.out_proj(torch.cat([h_re, h_im], dim=-1))))


class LRUBlock(nn.Module):
    """An LRU layer, then a post-LN GELU feed-forward (4x wide)."""

    def __init__(self, params: LRURecParams) -> None:
        super().__init__()
        dim = params.hidden_size
        self.lru = LRULayer(
            dim, params.state_mult * dim, params.recurrent_dropout, params.r_min, params.r_max
        )
        self.ffn = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(params.dropout), nn.Linear(4 * dim, dim)
        )
        self.drop = nn.Dropout(params.dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, real: Tensor, recurrent: bool = False) -> Tensor:
        x = self.lru(x, real, recurrent)
        return self.norm(x + self.drop(self.ffn(x)))


@register("lrurec")
class LRURec(CausalRecommender):
    """Stacked linear recurrent units over the history; tied item embeddings."""

    Params = LRURecParams

    def __init__(self, params: LRURecParams, n_items: int, n_users: int, max_len: int) -> None:
        super().__init__(params, n_items, n_users, max_len)
        dim = params.hidden_size
        self.items = params.item_input(n_items, dim)
        self.drop = nn.Dropout(params.dropout)
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(LRUBlock(params) for _ in range(params.num_layers))
        self._init_weights(params.init_std)

    def _init_weights(self, std: float) -> None:
        """Truncated normal for the blocks' weights (the item input keeps its own init)."""
        for name, weight in self.blocks.named_parameters():
            if "norm" in name or "params_log" in name:
                continue
            nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)

    @property
    def item_input(self) -> ItemInput:
        return self.items

    def hidden_states(
        self,
        histories: Tensor,
        table: Tensor | None = None,
        events: Tensor | None = None,
        recurrent: bool = False,
    ) -> Tensor:
        """``[B, L, D]``: the state after each position (causal by construction);
        ``recurrent=True`` steps through time instead of scanning in parallel."""
        histories = histories[:, -self.max_len :]
        if events is not None:
            events = events[:, -self.max_len :]
        table = self.items.table() if table is None else table
        real = (histories != 0).unsqueeze(-1).to(table.dtype)
        x = self.norm(self.drop(self.items(histories, table, events)))
        for block in self.blocks:
            x = block(x, real, recurrent)
        return x
