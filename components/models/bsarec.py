"""BSARec: An Attentive Inductive Bias for Sequential Recommendation beyond the
Self-Attention (Shin et al., AAAI 2024; reference code yehjin-shin/BSARec).

Each layer mixes two views of the sequence, ``alpha * filter + (1 - alpha) * attention``,
both post-LN residual sublayers, then a GELU feed-forward (post-LN):

- the *filter* keeps the ``c // 2 + 1`` lowest frequencies of the window (an ideal
  low-pass, fixed) and adds the rest (the high-pass ``x - low``) scaled by a learned
  per-dimension ``beta`` (stored as ``sqrt_beta``, used squared, initialised N(0, 1));
- the *attention* is ordinary causal self-attention.

Departures from the reference code, and why:

- **Causal filter (no future leakage).** The reference filters the whole window with an
  FFT, which mixes future items into every earlier position. It stays honest only because
  it trains on one target per sequence (the last position, with every prefix of a user
  expanded into its own training sequence). Here, as for SASRec, every position of a
  sequence predicts its next item, so the filter must not read the future. We use the
  filter exactly as the reference applies it *at the last position of the window*: that
  row of the FFT low-pass is a fixed kernel ``k`` over the window (the low-pass's periodic
  impulse response for a window of ``max_len``), so the filtered value at step ``t`` is
  ``sum_j k[j] x[t - j]`` over the items read so far, a causal convolution. For a
  one-layer model with zeroed padding this equals the reference's output at its last
  position; in deeper models the lower layers are causal too, where the reference
  re-filters each prefix non-causally. Padding is kept out of the filter by the same mask
  the attention uses (a position reads exactly what its attention may read).
- positions counted from the oldest item of the window (as our SASRec), so every
  training position equals inference on its prefix; the reference counts over the padded
  window, which is only faithful with its prefix expansion. With the causal filter (its
  weights depend only on the lag) this also makes one-event deletions exact by prefix
  reuse, as for SASRec (:mod:`components.models.prefix`): deleting event ``j`` leaves
  every layer's rows before ``j`` unchanged; the reference's global FFT filter would not;
- items enter through the shared :class:`~components.models.layers.ItemInput` (id, and
  optionally text / category / event-type inputs), like the other sequence models;
- repeat-aware scoring (``seen_bias``, see :mod:`components.models.base`), on by default
  as for the other sequence models; CE over all items at every position by default.

Reference Beauty settings kept: 64 dimensions, 2 layers, 1 head, dropout 0.5/0.5,
``c = 5``, ``alpha = 0.7``, LayerNorm eps 1e-12, N(0, 0.02) linear init.
"""

from __future__ import annotations

from functools import partial

import torch
from pydantic import Field
from torch import Tensor, nn

from components.models.layers import TransformerBlock, TransformerEncoder, TransformerParams
from components.models.sasrec import SASRec, SASRecParams
from components.models.zoo import register


class BSARecParams(SASRecParams):
    """BSARec hyperparameters: SASRec's (the reference's Beauty layout) plus the filter."""

    num_heads: int = Field(1, ge=1, description="attention heads (must divide hidden_size)")
    c: int = Field(
        5, ge=1, description="low-pass cut-off: the filter keeps the c // 2 + 1 lowest frequencies"
    )
    alpha: float = Field(
        0.7, ge=0, le=1, description="weight of the filter view (1 - alpha: self-attention)"
    )


def low_pass_kernel(window: int, c: int) -> Tensor:
    """``[window]`` weights ``k[j]`` of the item ``j`` steps back in the low-pass output at the
    last position of a ``window``-long sequence (the reference's rfft/irfft low-pass)."""
    keep = torch.zeros(window // 2 + 1)
    keep[: c // 2 + 1] = 1.0
    return torch.fft.irfft(keep, n=window)


def causal_toeplitz(kernel: Tensor) -> Tensor:
    """``[L, L]`` lower-triangular matrix with ``T[t, s] = kernel[t - s]`` (``s <= t``)."""
    length = kernel.shape[0]
    steps = torch.arange(length)
    lag = steps[:, None] - steps[None, :]
    return torch.where(lag >= 0, kernel[lag.clamp(min=0)], torch.zeros(()))


class FrequencyFilter(nn.Module):
    """``LayerNorm(x + dropout(low + beta**2 * (x - low)))`` with a causal low-pass ``low``."""

    toeplitz: Tensor  # [max_len, max_len] causal low-pass weights (derived, not saved)

    def __init__(self, dim: int, window: int, c: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.register_buffer(
            "toeplitz", causal_toeplitz(low_pass_kernel(window, c)), persistent=False
        )
        self.sqrt_beta = nn.Parameter(torch.randn(dim))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x [B, L, D]``; ``mask [B, 1, L, L]`` (True = may read): each position filters
        only what it may attend to (the past, never padding)."""
        return self.output(x, self.low_pass(x, mask))

    def low_pass(self, x: Tensor, mask: Tensor | None, queries: int | None = None) -> Tensor:
        """``[B, Q, D]`` causal low-pass of ``x [B, L, D]`` at its last ``queries`` rows
        (all by default), each reading what ``mask`` (``[B, 1, Q, L]``, ``[Q, L]``, or
        None: the whole past) lets it read. The weights depend only on the lag, so a row's
        value does not depend on where the sequence starts."""
        length = x.shape[1]
        weights = self.toeplitz[length - (queries or length) : length, :length]
        if mask is not None:
            weights = weights * (mask[:, 0] if mask.dim() == 4 else mask)
        return weights.to(x.dtype) @ x

    def output(self, x: Tensor, low: Tensor) -> Tensor:
        """The filter sublayer's output at rows ``x`` given their low-pass ``low``."""
        filtered = low + self.sqrt_beta**2 * (x - low)
        return self.norm(x + self.drop(filtered))


class BSARecBlock(TransformerBlock):
    """Post-LN ``alpha * filter(x) + (1 - alpha) * attention(x)``, then the feed-forward."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_mult: int,
        dropout: float,
        attn_dropout: float,
        norm_first: bool = False,
        eps: float = 1e-12,
        *,
        window: int,
        c: int,
        alpha: float,
    ) -> None:
        super().__init__(dim, heads, ffn_mult, dropout, attn_dropout, False, eps)
        self.alpha = alpha
        self.filter = FrequencyFilter(dim, window, c, dropout, eps)

    def context(self, inputs: Tensor, mask: Tensor | None, queries: int | None = None) -> Tensor:
        return self.filter.low_pass(inputs, mask, queries)

    def finish(self, x: Tensor, attended: Tensor, context: Tensor | None = None) -> Tensor:
        assert context is not None  # the filter's low-pass (from :meth:`context`)
        mixed = self.alpha * self.filter.output(x, context) + (1 - self.alpha) * self.norm1(
            x + attended
        )
        return self.norm2(mixed + self.drop(self.ffn(mixed)))


@register("bsarec")
class BSARec(SASRec):
    """Causal frequency filter + self-attention per layer; tied item embeddings. Everything
    but the blocks (inputs, training pairs, scoring) is SASRec's."""

    Params = BSARecParams

    def build_encoder(
        self, params: TransformerParams, n_items: int, max_len: int
    ) -> TransformerEncoder:
        assert isinstance(params, BSARecParams)  # Params: built from this class's settings
        block = partial(BSARecBlock, window=max_len, c=params.c, alpha=params.alpha)
        return params.encoder(n_items, max_len, block=block)
