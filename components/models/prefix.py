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
    encoder: TransformerEncoder, history: Tensor, positions: Tensor, events: Tensor | None = None
) -> Tensor:
    """``[E + 1, D]`` causal encodings at the last position: row 0 of ``history`` (``[n]``
    item indices, oldest first, no padding, ``2 <= n <= max_len``), row ``e + 1`` of it
    without the event at ``positions[e]`` (with its event type, ``events`` aligned with
    ``history``). Equal, up to float rounding, to ``encoder`` on the left-padded rows."""
    n, device = history.shape[0], history.device
    table = encoder.items.table()
    blocks: list[TransformerBlock] = list(encoder.blocks)  # type: ignore[arg-type]
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    x = _embedded(encoder, history, events, torch.arange(n, device=device), table)[None]
    inputs, keys = [], []
    for block in blocks:
        qkv = block.project_qkv(x)
        inputs.append(x[0])
        keys.append(qkv[0])
        x = block.finish(x, block.drop(block.proj(block.mix(qkv, qkv, causal))))
    full = x[:, -1]
    if positions.numel() == 0:
        return _final(encoder, full)
    return _final(
        encoder, torch.cat([full, _variants(encoder, history, positions, events, inputs, keys)])
    )


def _variants(
    encoder: TransformerEncoder,
    history: Tensor,
    positions: Tensor,
    events: Tensor | None,
    inputs: list[Tensor],
    keys: list[Tensor],
) -> Tensor:
    """``[E, D]`` last-position states (before a pre-LN encoder's final norm) of the
    deletions, from the full history's per-block ``inputs`` and ``keys`` (``[n, D]`` and
    ``[n, 3D]``)."""
    n, n_variants = history.shape[0], positions.shape[0]
    steps = torch.arange(n - 1, device=history.device)
    suffix = steps[None] >= positions[:, None]  # [E, n - 1]: rows to recompute
    variant, row = suffix.nonzero(as_tuple=True)
    source = row + 1  # a suffix row holds the event one place later in the full history
    kinds = None if events is None else events[source]
    x = _embedded(encoder, history[source], kinds, row, encoder.items.table())
    causal = torch.ones(n - 1, n - 1, dtype=torch.bool, device=history.device).tril()
    blocks: list[TransformerBlock] = list(encoder.blocks)  # type: ignore[arg-type]
    for depth, block in enumerate(blocks):
        merged = keys[depth][: n - 1].expand(n_variants, n - 1, -1).clone()
        merged[variant, row] = block.project_qkv(x)
        if depth < len(blocks) - 1:
            attended = block.mix(merged, merged, causal)[variant, row]
            x = block.finish(x, block.drop(block.proj(attended)))
            continue
        last = inputs[depth][n - 2].expand(n_variants, -1).clone()
        at_end = row == n - 2
        last[variant[at_end]] = x[at_end]
        attended = block.drop(block.proj(block.mix(merged[:, -1:], merged, None)))
        return block.finish(last[:, None], attended)[:, 0]
    raise AssertionError("a Transformer encoder has at least one block")


def _embedded(
    encoder: TransformerEncoder,
    items: Tensor,
    events: Tensor | None,
    steps: Tensor,
    table: Tensor,
) -> Tensor:
    """``[m, D]`` first-block inputs of ``items`` at position ids ``steps`` (the encoder's
    embedding sum, with the embedding LayerNorm of a post-LN encoder)."""
    kinds = None if events is None else events[None]
    x = encoder.items(items[None], table, kinds)[0] + encoder.positions(steps)
    return encoder.drop(x if encoder.norm_first else encoder.norm(x))


def _final(encoder: TransformerEncoder, states: Tensor) -> Tensor:
    """The encoder's output of last-block ``states`` (its final LayerNorm when pre-LN)."""
    return encoder.norm(states) if encoder.norm_first else states
