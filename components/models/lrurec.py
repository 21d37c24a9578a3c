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
from collections.abc import Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from components.models.base import CausalRecommender
from components.models.layers import ItemInput, ItemInputParams
from components.models.prefix import SuffixRows, deletable, suffix_rows
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
    u_re: Tensor, u_im: Tensor, lam_re: Tensor, lam_im: Tensor, steps: int | None = None
) -> tuple[Tensor, Tensor]:
    """States of ``h_t = lambda * h_{t-1} + u_t`` (``h_{-1} = 0``) for ``u [B, L, H]`` as
    real/imaginary parts, in ``ceil(log2 L)`` vectorised steps (Hillis-Steele scan).

    With ``steps``, exactly that many steps whatever ``L`` (at least ``ceil(log2 L)``):
    a step that reaches back beyond the sequence adds exact zeros, so the states are the
    same bit for bit, and one recording of the computation (a trace or an ONNX export,
    components/models/compiled.py) holds for every length up to ``2 ** steps``."""
    if steps is not None:
        return _fixed_scan(u_re, u_im, lam_re, lam_im, steps)
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


def _fixed_scan(
    u_re: Tensor, u_im: Tensor, lam_re: Tensor, lam_im: Tensor, steps: int
) -> tuple[Tensor, Tensor]:
    """:func:`parallel_scan` in ``steps`` steps, each shape-independent: the states
    ``shift`` places back are the sequence shifted right by ``shift`` (zeros first) and cut
    to its length, which is all zeros once ``shift >= L``."""
    length = u_re.shape[1]
    h_re, h_im = u_re, u_im
    p_re, p_im = lam_re, lam_im
    for step in range(steps):
        zeros = h_re.new_zeros(h_re.shape[0], 2**step, h_re.shape[2])
        prev_re = torch.cat([zeros, h_re], dim=1)[:, :length]
        prev_im = torch.cat([zeros, h_im], dim=1)[:, :length]
        h_re = h_re + (p_re * prev_re - p_im * prev_im)
        h_im = h_im + (p_re * prev_im + p_im * prev_re)
        p_re, p_im = p_re * p_re - p_im * p_im, 2 * p_re * p_im
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
        #: scan steps of a recording (enough for the model's longest history: LRURec sets it)
        self.scan_steps = 6
        self.in_proj = nn.Linear(dim, 2 * state)
        self.out_proj = nn.Linear(2 * state, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, real: Tensor, recurrent: bool = False) -> Tensor:
        """``x [B, L, D]``; ``real [B, L, 1]`` is 0 at padding, whose input is dropped so it
        never enters a state."""
        inputs, decay = self.inputs(x, real), self.decay()
        if recurrent:
            h_re, h_im = sequential_scan(*inputs, *decay)
        else:  # a recording (trace, ONNX export) takes the fixed-step scan: every length
            steps = self.scan_steps if torch.jit.is_tracing() else None
            h_re, h_im = parallel_scan(*inputs, *decay, steps=steps)
        return self.output(x, h_re, h_im)

    def decay(self) -> tuple[Tensor, Tensor]:
        """``lambda`` (real, imaginary parts, ``[state]``): ``exp(-nu + i theta)``."""
        # unbind, not tuple unpacking: iterating a tensor would freeze a recording of it
        nu, theta, _ = torch.exp(self.params_log).unbind(0)
        magnitude = torch.exp(-nu)
        return magnitude * torch.cos(theta), magnitude * torch.sin(theta)

    def decay_powers(self, powers: Tensor) -> tuple[Tensor, Tensor]:
        """``lambda ** powers`` (``[P]`` integer powers): ``[P, state]`` real, imaginary."""
        nu, theta, _ = torch.exp(self.params_log).unbind(0)
        magnitude = torch.exp(-nu[None] * powers[:, None])
        angle = theta[None] * powers[:, None]
        return magnitude * torch.cos(angle), magnitude * torch.sin(angle)

    def inputs(self, x: Tensor, real: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The recurrence's inputs ``gamma * B x`` (real, imaginary parts), 0 where ``real``
        is 0 (padding)."""
        gamma = torch.exp(self.params_log[2])
        u = self.in_proj(x) * gamma.repeat(2)
        return (u if real is None else u * real).chunk(2, dim=-1)

    def output(self, x: Tensor, h_re: Tensor, h_im: Tensor) -> Tensor:
        """The layer's output at rows ``x`` given their states."""
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
        return self.feed_forward(self.lru(x, real, recurrent))

    def feed_forward(self, x: Tensor) -> Tensor:
        """The post-LN feed-forward sublayer (position-wise) on the LRU layer's output."""
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
        for block in self.blocks:  # hidden_states keeps at most max_len positions
            if isinstance(block, LRUBlock):
                block.lru.scan_steps = max(1, math.ceil(math.log2(max_len)))
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

    def encode_deletions(
        self, histories: Tensor, positions: Tensor, events: Tensor | None = None
    ) -> Tensor | None:
        """One-event deletions from the states before each deleted event
        (:func:`lru_deletion_states`). None in training mode (dropout) and for fewer than
        two events."""
        if self.training or not deletable(histories, self.max_len):
            return None
        x = self.norm(self.items(histories, self.items.table(), events))
        blocks = [block for block in self.blocks if isinstance(block, LRUBlock)]
        return lru_deletion_states(blocks, x, positions)


Complex = tuple[Tensor, Tensor]  # (real, imaginary) parts


def lru_deletion_states(blocks: Sequence[LRUBlock], x: Tensor, positions: Tensor) -> Tensor:
    """``[Q, E + 1, D]`` outputs at the last position of eval-mode ``blocks`` over ``x``
    (``[Q, n, D]`` first-block inputs of histories without padding, ``n >= 2``) in row 0,
    and over it without the event at ``positions[e]`` in row ``e + 1``.

    No position embeddings and a recurrence that reads only the past: deleting event ``j``
    leaves every block's rows before ``j`` unchanged, and its suffix rows hold the later
    events one place earlier. Only those rows are recomputed (packed), and cheaper than a
    scan: in the first block a suffix state is the full history's minus a decaying copy of
    the deleted event's step, ``h'[r] = h[r + 1] - lambda^(r + 1 - j) (h[j] - h[j - 1])``;
    in the last block only the last row is needed, a ``lambda``-weighted sum of the suffix
    inputs on top of the state before ``j``; blocks in between scan the suffix rows. Equal
    to the blocks on the left-padded variants up to float32 reassociation (``lambda``'s
    powers are taken in closed form rather than by repeated products)."""
    n_questions, n, _ = x.shape
    layout = suffix_rows(n_questions, n, positions)
    starts = positions.repeat(n_questions)  # [V] the deleted position of each variant
    ends = layout.row == n - 2  # each variant's last row (those whose suffix is not empty)
    rows = x[layout.question, layout.row + 1]  # [N, D] suffix rows' first-block inputs
    for depth, block in enumerate(blocks):
        lru, last = block.lru, depth == len(blocks) - 1
        full = parallel_scan(*lru.inputs(x), *lru.decay())  # [Q, n, S] each
        powers = lru.decay_powers(torch.arange(n, device=x.device, dtype=x.dtype))
        if depth == 0:
            states = _first_block_states(full, powers, layout, starts, ends if last else None)
        elif last:
            states = _last_row_states(lru, full, powers, rows, layout, starts, ends)
        else:
            states = _scanned_states(lru, full, rows, layout, starts)
        rows = rows[ends] if last else rows
        rows = block.feed_forward(lru.output(rows, *states))
        keep = slice(n - 2, n) if last else slice(None)
        x = block.feed_forward(lru.output(x[:, keep], full[0][:, keep], full[1][:, keep]))
    out = x[:, :1].repeat(1, positions.shape[0], 1)  # deleting the last event: row n - 2
    out.view(-1, out.shape[-1])[layout.variant[ends]] = rows
    return torch.cat([x[:, 1:], out], dim=1)


def _before(full: Complex, questions: Tensor, starts: Tensor) -> Complex:
    """The full histories' states ``h[j - 1]`` (0 for ``j = 0``) of ``questions`` at
    ``starts`` (``j``, aligned)."""
    previous = [torch.cat([torch.zeros_like(part[:, :1]), part[:, :-1]], dim=1) for part in full]
    return previous[0][questions, starts], previous[1][questions, starts]


def _times(a: Complex, b: Complex) -> Complex:
    return a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]


def _power(powers: Complex, exponents: Tensor) -> Complex:
    """``lambda ** exponents`` from the table ``powers`` (``[n, S]``: ``lambda ** 0 .. n-1``)."""
    return powers[0][exponents], powers[1][exponents]


def _first_block_states(
    full: Complex, powers: Complex, layout: SuffixRows, starts: Tensor, only: Tensor | None
) -> Complex:
    """First-block suffix states (of the rows ``only`` selects; all by default):
    ``h[r + 1] - lambda^(r + 1 - j) (h[j] - h[j - 1])`` (the suffix inputs are the full
    history's, one place later, so only the deleted step's contribution goes)."""
    chosen = slice(None) if only is None else only
    questions, row = layout.question[chosen], layout.row[chosen]
    start = starts[layout.variant[chosen]]
    later = full[0][questions, row + 1], full[1][questions, row + 1]
    previous = _before(full, questions, start)
    step = full[0][questions, start] - previous[0], full[1][questions, start] - previous[1]
    gone = _times(_power(powers, row + 1 - start), step)
    return later[0] - gone[0], later[1] - gone[1]


def _last_row_states(
    lru: LRULayer,
    full: Complex,
    powers: Complex,
    rows: Tensor,
    layout: SuffixRows,
    starts: Tensor,
    ends: Tensor,
) -> Complex:
    """Last-block states at each variant's last row (``n - 2``): ``lambda^(n - 1 - j)
    h[j - 1] + sum_(r >= j) lambda^(n - 2 - r) u'[r]`` over the suffix rows' new inputs."""
    last = full[0].shape[1] - 2
    inputs = lru.inputs(rows)
    weighted = _times(_power(powers, last - layout.row), inputs)
    sums = [
        part.new_zeros(starts.shape[0], part.shape[1]).index_add_(0, layout.variant, part)
        for part in weighted
    ]
    variants, questions = layout.variant[ends], layout.question[ends]
    start = starts[variants]
    carried = _times(_power(powers, last + 1 - start), _before(full, questions, start))
    return sums[0][variants] + carried[0], sums[1][variants] + carried[1]


def _scanned_states(
    lru: LRULayer, full: Complex, rows: Tensor, layout: SuffixRows, starts: Tensor
) -> Complex:
    """Suffix states of a middle block: the suffix rows' new inputs scanned in a
    ``[V, n - 1]`` batch whose row ``j - 1`` holds the state before ``j`` (0 elsewhere)."""
    n_events = layout.mask.shape[0]
    length = full[0].shape[1] - 1
    inputs = lru.inputs(rows)
    carry = (starts >= 1).nonzero().squeeze(1)
    before = _before(full, carry // n_events, starts[carry])
    dense = []
    for part, state in zip(inputs, before, strict=True):
        batch = part.new_zeros(starts.shape[0], length, part.shape[1])
        batch[layout.variant, layout.row] = part
        batch[carry, starts[carry] - 1] = state
        dense.append(batch)
    states = parallel_scan(dense[0], dense[1], *lru.decay())
    return states[0][layout.variant, layout.row], states[1][layout.variant, layout.row]
