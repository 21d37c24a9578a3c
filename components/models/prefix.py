"""One-event deletions of a history by prefix reuse (exact), for causal encoders.

Counterfactual deletion (``components.explain.influence``) encodes a history of ``n``
events and its ``E`` one-event deletions. Encoding each variant from scratch costs
``E x n`` positions in every block. In a causal encoder whose positions count from the
oldest event (SASRec's ``positions_from: first``), deleting event ``j`` leaves positions
``0..j-1`` exactly as they were (same items, same position ids, and causal attention
never reads the future), so every block's states there are the full history's. Only the
suffix ``j..n-2`` (the later events, each moved one position back) is recomputed, reading
the full history's cached keys and values for the prefix; and of the last block only the
last position is needed (the representation that scores the next item). That is about
``n^2 / 2`` positions in the lower blocks and one per variant in the last, instead of
``n^2`` in every block (the full history's last block, too, runs attention and the
feed-forward at its last position only). In the first block a suffix row's query is the
same in every variant, so its logits are computed once (:func:`_first_block_attention`);
in the last block the suffix rows' keys and values are never projected
(:func:`_last_row_attention`).

With positions counted from the most recent event (``positions_from: last``) every
earlier event's position id changes when a later one is deleted, so nothing can be
reused; :func:`prefix_reusable` says so and callers encode the variants in full. A block
may read its input sequence besides attention (:meth:`TransformerBlock.context`): BSARec's
causal low-pass filter, whose weights depend only on the lag, so it is just as
prefix-stable; the variants' context is taken over the same merged prefix + suffix rows.

The same holds for any recurrence: the state before a deleted event is the full
history's. :func:`gru_deletion_states` runs a GRU (GRU4Rec) from there over each suffix
(all variants packed); LRURec's linear recurrence has closed forms of its own
(:func:`components.models.lrurec.lru_deletion_states`, on :class:`SuffixRows`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from components.models.layers import TransformerBlock, TransformerEncoder


class SuffixRows(NamedTuple):
    """The rows that one-event deletions recompute, packed. Variant ``e`` of question ``q``
    (its history without the event at ``positions[e]``) is row ``q * E + e`` of a
    ``[Q * E, n - 1]`` variant batch; its rows ``r >= positions[e]`` (the suffix) hold the
    full history's event ``r + 1``, its rows before that are the full history's own."""

    mask: Tensor  # [E, n - 1] bool: the suffix rows of each deletion
    question: Tensor  # [N] question of each packed row
    variant: Tensor  # [N] variant (``question * E + event``) of each packed row
    row: Tensor  # [N] position of each packed row within its variant


def suffix_rows(n_questions: int, n: int, positions: Tensor) -> SuffixRows:
    """:class:`SuffixRows` of ``n_questions`` histories of ``n`` events, deleting each of
    ``positions [E]`` in turn (question-major, then event, then row: each variant's rows are
    contiguous and in order)."""
    steps = torch.arange(n - 1, device=positions.device)
    mask = steps[None] >= positions[:, None]
    question, event, row = mask.expand(n_questions, -1, -1).nonzero(as_tuple=True)
    return SuffixRows(mask, question, question * positions.shape[0] + event, row)


def deletable(histories: Tensor, max_len: int) -> bool:
    """Whether a deletion shortcut takes ``histories [Q, n]`` (``2 <= n <= max_len``). While
    one is recorded into a graph (components/explain/compiled.py) the shapes stay symbolic:
    the caller checks them before each call, and the recording is checked on probes."""
    return torch.jit.is_tracing() or 2 <= histories.shape[1] <= max_len


def prefix_reusable(encoder: TransformerEncoder) -> bool:
    """Whether :func:`deletion_states` is exact for ``encoder`` (eval mode, positions from
    the oldest event, blocks that compute as :meth:`TransformerBlock.forward`: attention
    plus a :meth:`~TransformerBlock.context` of the past, as SASRec's and BSARec's)."""
    plain = all(
        isinstance(block, TransformerBlock) and type(block).forward is TransformerBlock.forward
        for block in encoder.blocks
    )
    return plain and encoder.positions_from == "first" and not encoder.training


@torch.no_grad()
def deletion_states(
    encoder: TransformerEncoder, histories: Tensor, positions: Tensor, events: Tensor | None = None
) -> Tensor:
    """``[Q, E + 1, D]`` causal encodings at the last position: in row 0 of each of
    ``histories`` (``[Q, n]`` item indices, oldest first, no padding, ``2 <= n <=
    max_len``), in row ``e + 1`` of it without the event at ``positions[e]`` (with its
    event type, ``events [Q, n]`` aligned with ``histories``). Equal, up to float
    rounding, to ``encoder`` on the left-padded rows."""
    n, device = histories.shape[1], histories.device
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    x = _embedded(encoder, histories, events, torch.arange(n, device=device))
    inputs, keys = [], []
    blocks = _blocks(encoder)
    for depth, block in enumerate(blocks):
        qkv = block.project_qkv(x)
        inputs.append(x)
        keys.append(qkv)
        if depth < len(blocks) - 1:
            attended = block.drop(block.proj(block.mix(qkv, qkv, causal)))
            x = block.finish(x, attended, block.context(x, None))
            continue
        # of the last block only the last position is read (the state that scores): its
        # keys and values at every position (the variants read them), the rest there only
        attended = block.drop(block.proj(block.mix(qkv[:, -1:], qkv, causal[-1:])))
        x = block.finish(x[:, -1:], attended, block.context(x, None, 1))
    full = x[:, -1:]
    if not torch.jit.is_tracing() and positions.numel() == 0:  # a recording deletes some
        return _final(encoder, full)
    variants = _variants(encoder, histories, positions, events, inputs, keys)
    return _final(encoder, torch.cat([full, variants], dim=1))


def _blocks(encoder: TransformerEncoder) -> list[TransformerBlock]:
    return list(encoder.blocks)  # type: ignore[arg-type]  # checked by prefix_reusable


def _variants(
    encoder: TransformerEncoder,
    histories: Tensor,
    positions: Tensor,
    events: Tensor | None,
    inputs: list[Tensor],
    keys: list[Tensor],
) -> Tensor:
    """``[Q, E, D]`` last-position states (before a pre-LN encoder's final norm) of the
    deletions, from the full histories' per-block ``inputs`` and ``keys`` (``[Q, n, D]``
    and ``[Q, n, 3D]``)."""
    (n_questions, n), n_events = histories.shape, positions.shape[0]
    steps = torch.arange(n - 1, device=histories.device)
    layout = suffix_rows(n_questions, n, positions)
    question, variant, row = layout.question, layout.variant, layout.row
    # a suffix row holds the event one place later in the full history; in the first block
    # it is the same in every variant (item p + 1 at position p), so is its projection
    kinds = None if events is None else events[:, 1:]
    shifted = _embedded(encoder, histories[:, 1:], kinds, steps)  # [Q, n - 1, D]
    x = shifted[question, row]  # [N, D] the suffix rows of every variant, packed
    causal = torch.ones(n - 1, n - 1, dtype=torch.bool, device=histories.device).tril()
    blocks = _blocks(encoder)
    for depth, block in enumerate(blocks):
        if depth < len(blocks) - 1:
            if depth == 0:
                fresh = block.project_qkv(shifted)
                attended = _first_block_attention(block, keys[0], fresh, layout, positions)
            else:
                merged = keys[depth][:, : n - 1].repeat_interleave(n_events, dim=0)
                merged[variant, row] = block.project_qkv(x)
                attended = block.mix(merged, merged, causal)[variant, row]
            context = _suffix_context(block, inputs[depth], x, layout, None)
            x = block.finish(x, block.drop(block.proj(attended)), context)
            continue
        last = inputs[depth][:, n - 2].repeat_interleave(n_events, dim=0)
        at_end = row == n - 2
        last[variant[at_end]] = x[at_end]
        attended = _last_row_attention(block, keys[depth], last, x, layout)
        context = _suffix_context(block, inputs[depth], x, layout, 1)
        return block.finish(last[:, None], attended, context).view(n_questions, n_events, -1)
    raise AssertionError("a Transformer encoder has at least one block")


def _last_row_attention(
    block: TransformerBlock, keys: Tensor, last: Tensor, rows: Tensor, layout: SuffixRows
) -> Tensor:
    """``[V, 1, D]`` last-block attention (after the output projection) at each variant's
    last row (its layer input ``last [V, D]``), reading the full histories' keys and
    values ``keys [Q, n, 3D]`` before the deleted event and those of the packed suffix rows
    (layer inputs ``rows [N, D]``) after it.

    No variant's keys are built, and the suffix rows are never projected: a logit is
    ``q . (W_k x + b_k) = (W_k^T q) . x + q . b_k`` and a weighted sum of values is
    ``W_v (sum p x) + b_v sum p``, so each suffix row costs a dot product and a weighted
    add of its ``D`` inputs (per head) instead of a ``D x 2D`` projection. The suffix rows
    are laid out densely (``[V, n - 1, D]``, zero before the deleted event), so both are
    one batched product per variant and no packed row is gathered or scattered."""
    n_questions, n, width = keys.shape
    n_events, m, heads = layout.mask.shape[0], n - 1, block.heads
    dim = width // 3
    size = dim // heads
    query = block.project_qkv(last)[:, :dim].unflatten(-1, (heads, size))  # [V, H, d]
    weight = block.qkv.weight.unflatten(0, (3, heads, size))  # [3, H, d, D]
    bias = block.qkv.bias.unflatten(0, (3, heads, size))  # [3, H, d]
    inputs = block.norm1(rows) if block.norm_first else rows  # [N, D] what they project
    dense = inputs.new_zeros(last.shape[0], m, inputs.shape[1])
    dense[layout.variant, layout.row] = inputs  # [V, m, D]
    _, key_prefix, value_prefix = _heads(keys[:, :m], heads)  # [Q, H, m, d]
    by_question = query.view(n_questions, n_events, heads, size).transpose(1, 2)
    from_prefix = (by_question @ key_prefix.transpose(-1, -2)).transpose(1, 2)  # [Q, E, H, m]
    reads = torch.einsum("vhd,hdk->vhk", query, weight[1])  # [V, H, D]: W_k^T q
    offsets = (query * bias[1]).sum(-1, keepdim=True)  # [V, H, 1]: q . b_k
    from_suffix = (reads @ dense.transpose(1, 2) + offsets).view(n_questions, n_events, heads, m)
    suffix = layout.mask[:, None]  # [E, 1, m]
    logits = torch.where(suffix, from_suffix, from_prefix) * size**-0.5
    weights = logits.softmax(-1)  # [Q, E, H, m]
    on_suffix = weights.masked_fill(~suffix, 0.0).view(-1, heads, m)  # [V, H, m]
    prefix = weights.masked_fill(suffix, 0.0).transpose(1, 2) @ value_prefix  # [Q, H, E, d]
    mixed = on_suffix @ dense  # [V, H, D]
    values = torch.einsum("vhk,hdk->vhd", mixed, weight[2]) + on_suffix.sum(-1)[..., None] * bias[2]
    attended = prefix.transpose(1, 2).flatten(0, 1) + values  # [V, H, d]
    return block.drop(block.proj(attended.flatten(1)))[:, None]


def _first_block_attention(
    block: TransformerBlock, keys: Tensor, fresh: Tensor, layout: SuffixRows, positions: Tensor
) -> Tensor:
    """``[N, D]`` first-block attention (before the output projection) at every variant's
    suffix rows, without building any variant's keys or logits.

    In the first block a suffix row ``r`` (the full history's event ``r + 1`` at position
    ``r``) has the same query in every variant: the shifted history's (``fresh [Q, n - 1,
    3D]``). Deleting ``j`` makes it read the full history's keys ``keys [Q, n, 3D]`` at
    ``c < j`` and the shifted ones at ``j <= c <= r``. So its logits against both key sets
    are two ``[n - 1, n - 1]`` matrices per head shared by all variants (``n`` times fewer
    query-key products than attending in every variant); a packed row takes its weights
    from one or the other by ``c < j`` and mixes the matching values. One stabiliser per
    row (its largest logit over both sets) keeps every exponent <= 0 (a variant's own
    largest logit would have to trail it by more than float32's exponent range, about 87,
    for its weights to underflow)."""
    n_questions, m, width = fresh.shape
    heads = block.heads
    query, key_new, value_new = _heads(fresh, heads)  # [Q, H, m, D / H]
    _, key_old, value_old = _heads(keys[:, :m], heads)
    scale = (width // 3 // heads) ** -0.5
    future = torch.ones(m, m, dtype=torch.bool, device=fresh.device).triu(1)
    logits = torch.cat([query @ key_old.transpose(-1, -2), query @ key_new.transpose(-1, -2)], -1)
    logits = (logits * scale).masked_fill(future.repeat(1, 2), float("-inf"))  # [Q, H, r, 2m]
    weights = (logits - logits.amax(-1, keepdim=True)).exp().transpose(1, 2)  # [Q, r, H, 2m]
    deleted = positions[layout.variant % positions.shape[0]]  # [N] j of each packed row
    columns = torch.arange(m, device=fresh.device)
    old = torch.cat([columns[None] < deleted[:, None], columns[None] >= deleted[:, None]], 1)
    chosen = weights[layout.question, layout.row] * old[:, None]  # [N, H, 2m]
    # packed rows are question-major, the same number per question
    per_question = chosen.view(n_questions, -1, heads, 2 * m).transpose(1, 2)
    mixed = per_question @ torch.cat([value_old, value_new], 2)  # [Q, H, N / Q, D / H]
    out = mixed.transpose(1, 2).flatten(0, 1) / chosen.sum(-1)[..., None]  # [N, H, D / H]
    return out.flatten(1)


def _heads(qkv: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values ``[Q, H, L, D / H]`` of projections ``qkv [Q, L, 3D]``."""
    parts = qkv.unflatten(-1, (3, heads, qkv.shape[-1] // 3 // heads)).permute(2, 0, 3, 1, 4)
    return parts[0], parts[1], parts[2]


def _suffix_context(
    block: TransformerBlock, inputs: Tensor, rows: Tensor, layout: SuffixRows, queries: int | None
) -> Tensor | None:
    """``block``'s :meth:`~TransformerBlock.context` in the variants: at their suffix rows
    (``[N, D]``), or at their last ``queries`` rows (``[V, queries, D]``), reading the
    full histories' block ``inputs [Q, n, D]`` before each deleted event and the suffix
    ``rows [N, D]`` after it. None (nothing built) for a block without a context."""
    if type(block).context is TransformerBlock.context:
        return None
    merged = inputs[:, :-1].repeat_interleave(layout.mask.shape[0], dim=0)
    merged[layout.variant, layout.row] = rows
    context = block.context(merged, None, queries)
    return (
        context if queries is not None or context is None else context[layout.variant, layout.row]
    )


def _embedded(
    encoder: TransformerEncoder, items: Tensor, events: Tensor | None, steps: Tensor
) -> Tensor:
    """``[B, m, D]`` first-block inputs of ``items [B, m]`` at position ids ``steps``
    (``[m]``): the encoder's embedding sum, with the embedding LayerNorm of a post-LN
    encoder."""
    x = encoder.items(items, encoder.items.table(), events) + encoder.positions(steps)
    return encoder.drop(x if encoder.norm_first else encoder.norm(x))


def _final(encoder: TransformerEncoder, states: Tensor) -> Tensor:
    """The encoder's output of last-block ``states`` (its final LayerNorm when pre-LN)."""
    return encoder.norm(states) if encoder.norm_first else states


@torch.no_grad()
def gru_deletion_states(gru: nn.GRU, inputs: Tensor, positions: Tensor) -> Tensor:
    """``[Q, E + 1, H]`` last-layer states of a (bias-free, eval-mode, batch-first) ``gru``
    after reading each of ``inputs`` (``[Q, n, In]`` embedded histories, no padding) in
    row 0, and after reading it without step ``positions[e]`` in row ``e + 1``.

    The state before step ``j`` is the full history's (a recurrence reads only the past),
    so deleting ``j`` runs the GRU from that state over steps ``j + 1 .. n - 1`` only: all
    variants in one packed batch of ``sum(n - 1 - j)`` steps instead of ``E x n``."""
    n_questions, n, _ = inputs.shape
    states = _gru_layer_states(gru, inputs)  # [layers, Q, n, H]
    full = states[-1][:, -1:]
    if positions.numel() == 0:
        return full
    # state before step j, per layer (zero before the first step)
    before = torch.cat([torch.zeros_like(states[:, :, :1]), states[:, :, :-1]], dim=2)
    starts = before[:, :, positions]  # [layers, Q, E, H]
    out = starts[-1].clone()  # deleting the last event: the state before it
    lengths = n - 1 - positions
    runs = lengths > 0
    if bool(runs.any()):
        steps = positions[runs, None] + 1 + torch.arange(n - 1, device=inputs.device)[None]
        suffixes = inputs[:, steps.clamp(max=n - 1)].flatten(0, 1)  # [Q * E', n - 1, In]
        packed = pack_padded_sequence(
            suffixes,
            lengths[runs].repeat(n_questions).cpu(),
            batch_first=True,
            enforce_sorted=False,
        )
        _, last = gru(packed, starts[:, :, runs].flatten(1, 2).contiguous())
        out[:, runs] = last[-1].view(n_questions, -1, last.shape[-1])
    return torch.cat([full, out], dim=1)


def _gru_layer_states(gru: nn.GRU, inputs: Tensor) -> Tensor:
    """``[layers, Q, n, H]``: every layer's state after each step of ``inputs`` (``nn.GRU``
    returns the last layer's only), one layer at a time with the module's own weights."""
    states, x = [], inputs
    for layer in range(gru.num_layers):
        weights = [getattr(gru, f"weight_ih_l{layer}"), getattr(gru, f"weight_hh_l{layer}")]
        start = x.new_zeros(1, x.shape[0], gru.hidden_size)
        x, _ = torch.gru(x, start, weights, False, 1, 0.0, False, False, True)
        states.append(x)
    return torch.stack(states)
