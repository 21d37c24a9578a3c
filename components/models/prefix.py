"""One-event deletions of a causal Transformer's history by prefix reuse (exact).

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
``n^2`` in every block.

With positions counted from the most recent event (``positions_from: last``) every
earlier event's position id changes when a later one is deleted, so nothing can be
reused; :func:`prefix_reusable` says so and callers encode the variants in full. Blocks
other than the plain :class:`~components.models.layers.TransformerBlock` (BSARec's filter
mixes positions its own way) are not covered either.
"""

from __future__ import annotations

import torch
from torch import Tensor

from components.models.layers import TransformerBlock, TransformerEncoder


def prefix_reusable(encoder: TransformerEncoder) -> bool:
    """Whether :func:`deletion_states` is exact for ``encoder`` (eval mode, positions from
    the oldest event, plain Transformer blocks)."""
    plain = all(type(block) is TransformerBlock for block in encoder.blocks)
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
    for block in _blocks(encoder):
        qkv = block.project_qkv(x)
        inputs.append(x)
        keys.append(qkv)
        x = block.finish(x, block.drop(block.proj(block.mix(qkv, qkv, causal))))
    full = x[:, -1:]
    if positions.numel() == 0:
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
    suffix = steps[None] >= positions[:, None]  # [E, n - 1]: rows to recompute
    question, event, row = suffix.expand(n_questions, -1, -1).nonzero(as_tuple=True)
    variant = question * n_events + event  # rows of the [Q * E, n - 1] variant batch
    # a suffix row holds the event one place later in the full history; in the first block
    # it is the same in every variant (item p + 1 at position p), so is its projection
    kinds = None if events is None else events[:, 1:]
    shifted = _embedded(encoder, histories[:, 1:], kinds, steps)  # [Q, n - 1, D]
    x = shifted[question, row]  # [N, D] the suffix rows of every variant, packed
    causal = torch.ones(n - 1, n - 1, dtype=torch.bool, device=histories.device).tril()
    blocks = _blocks(encoder)
    for depth, block in enumerate(blocks):
        if depth == 0:
            fresh = block.project_qkv(shifted)[:, None]  # [Q, 1, n - 1, 3D]
            merged = torch.where(suffix[None, :, :, None], fresh, keys[0][:, None, : n - 1])
            merged = merged.flatten(0, 1)
        else:
            merged = keys[depth][:, : n - 1].repeat_interleave(n_events, dim=0)
            merged[variant, row] = block.project_qkv(x)
        if depth < len(blocks) - 1:
            attended = block.mix(merged, merged, causal)[variant, row]
            x = block.finish(x, block.drop(block.proj(attended)))
            continue
        last = inputs[depth][:, n - 2].repeat_interleave(n_events, dim=0)
        at_end = row == n - 2
        last[variant[at_end]] = x[at_end]
        attended = block.drop(block.proj(block.mix(merged[:, -1:], merged, None)))
        return block.finish(last[:, None], attended).view(n_questions, n_events, -1)
    raise AssertionError("a Transformer encoder has at least one block")


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
