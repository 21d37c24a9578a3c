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
- ``filter: window`` restores the reference's filter exactly: the whole padded window of
  ``max_len`` (left padding included, as the reference pads every sequence to 50) is
  low-passed with wrap-around, so every position reads the whole window. That is only
  honest when the loss is taken at the last position alone, so it needs
  ``train.samples: prefixes`` (the reference's own recipe: every prefix its own example)
  and refuses every-position training. With ``positions_from: last`` the position ids
  are the reference's (counted over the padded window). Remaining differences: padding
  embeds as zero (the reference's padding row keeps its random init), a padding query
  attends to itself only (the reference's all-masked rows attend uniformly), and the
  empty-history prefix (predicting a user's first item from nothing) is not a training
  example;
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
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from components.errors import TrainingError
from components.models.base import TrainingPairs
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
    filter: Literal["causal", "window"] = Field(
        "causal",
        description="'causal': each position low-passes what it has read (every position "
        "can be trained); 'window': the reference's low-pass of the whole max_len window, "
        "padding included (needs train.samples: prefixes)",
    )


def low_pass_kernel(window: int, c: int) -> Tensor:
    """``[window]`` weights ``k[j]`` of the item ``j`` steps back in the low-pass output at the
    last position of a ``window``-long sequence (the reference's rfft/irfft low-pass)."""
    keep = torch.zeros(window // 2 + 1)
    keep[: c // 2 + 1] = 1.0
    return torch.fft.irfft(keep, n=window)


def window_low_pass(x: Tensor, c: int) -> Tensor:
    """The reference's filter: keep the ``c // 2 + 1`` lowest frequencies of ``x [B, L, D]``
    along the sequence (orthonormal rfft / irfft, so the window wraps around)."""
    spectrum = torch.fft.rfft(x, dim=1, norm="ortho")
    keep = torch.zeros(spectrum.shape[1], 1, dtype=x.dtype, device=x.device)
    keep[: c // 2 + 1] = 1.0
    return torch.fft.irfft(spectrum * keep, n=x.shape[1], dim=1, norm="ortho")


def window_matrix(window: int, c: int) -> Tensor:
    """``[L, L]`` matrix ``M`` with ``window_low_pass(x) == M @ x`` (a circulant: the
    filter is linear), so the filter is one small matmul and runs under autocast."""
    return window_low_pass(torch.eye(window)[None], c)[0]


def pad_window(histories: Tensor, length: int) -> Tensor:
    """The last ``length`` columns of left-padded ``histories``, left-padded to ``length``."""
    histories = histories[:, -length:]
    return F.pad(histories, (length - histories.shape[1], 0))


def causal_toeplitz(kernel: Tensor) -> Tensor:
    """``[L, L]`` lower-triangular matrix with ``T[t, s] = kernel[t - s]`` (``s <= t``)."""
    length = kernel.shape[0]
    steps = torch.arange(length)
    lag = steps[:, None] - steps[None, :]
    return torch.where(lag >= 0, kernel[lag.clamp(min=0)], torch.zeros(()))


class FrequencyFilter(nn.Module):
    """``LayerNorm(x + dropout(low + beta**2 * (x - low)))`` with a causal low-pass ``low``."""

    toeplitz: Tensor  # [max_len, max_len] causal low-pass weights (derived, not saved)

    def __init__(
        self, dim: int, window: int, c: int, dropout: float, eps: float, whole_window: bool = False
    ) -> None:
        super().__init__()
        self.whole_window = whole_window
        weights = (
            window_matrix(window, c)
            if whole_window
            else causal_toeplitz(low_pass_kernel(window, c))
        )
        self.register_buffer("toeplitz", weights, persistent=False)
        self.sqrt_beta = nn.Parameter(torch.randn(dim))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x [B, L, D]``; ``mask [B, 1, L, L]`` (True = may read): each position filters
        only what it may attend to (the past, never padding); with ``whole_window`` every
        position reads the whole ``max_len`` window, padding included (``mask`` unused)."""
        return self.output(x, self.low_pass(x, mask))

    def low_pass(self, x: Tensor, mask: Tensor | None, queries: int | None = None) -> Tensor:
        """``[B, Q, D]`` causal low-pass of ``x [B, L, D]`` at its last ``queries`` rows
        (all by default), each reading what ``mask`` (``[B, 1, Q, L]``, ``[Q, L]``, or
        None: the whole past) lets it read. The weights depend only on the lag, so a row's
        value does not depend on where the sequence starts. With ``whole_window`` each row
        reads all of ``x`` (the window), future and padding included."""
        length = x.shape[1]
        weights = self.toeplitz[length - (queries or length) : length, :length]
        if mask is not None and not self.whole_window:
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
        whole_window: bool = False,
    ) -> None:
        super().__init__(dim, heads, ffn_mult, dropout, attn_dropout, False, eps)
        self.alpha = alpha
        self.filter = FrequencyFilter(dim, window, c, dropout, eps, whole_window)

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
        block = partial(
            BSARecBlock,
            window=max_len,
            c=params.c,
            alpha=params.alpha,
            whole_window=params.filter == "window",
        )
        return params.encoder(n_items, max_len, block=block)

    @property
    def whole_window(self) -> bool:
        """Whether the filter reads the whole window (``filter: window``)."""
        return bool(self.params.filter == "window")

    def hidden_states(
        self, histories: Tensor, table: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        """As SASRec's; with ``filter: window`` the histories are first left-padded to the
        window (the filter's output depends on it) and only the last state is causal."""
        if self.whole_window:
            histories = pad_window(histories, self.max_len)
            events = None if events is None else pad_window(events, self.max_len)
        return super().hidden_states(histories, table, events)

    def training_pairs(self, batch: dict[str, Tensor]) -> TrainingPairs:
        if self.whole_window and batch["targets"].dim() > 1:
            raise TrainingError(
                "bsarec filter=window reads the whole window, so only its last position may "
                "be trained: set train.samples=prefixes"
            )
        return super().training_pairs(batch)

    def encode_deletions(
        self, histories: Tensor, positions: Tensor, events: Tensor | None = None
    ) -> Tensor | None:
        return None if self.whole_window else super().encode_deletions(histories, positions, events)
