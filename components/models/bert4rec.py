"""BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations from
Transformer (Sun et al., CIKM 2019).

A bidirectional Transformer trained with the Cloze task: random history items are
replaced by a ``[MASK]`` token (index ``n_items + 1``) and predicted from both sides. At
inference ``[MASK]`` is appended after the most recent item and its output scores the
next item.

Departures from the paper:
- full softmax cross-entropy over all items at masked positions (the paper's objective),
  with sampled negatives available through ``train.loss``;
- in addition to random masking, the most recent item of a training sequence is masked
  with probability ``last_item_mask_prob`` so training also sees the inference pattern;
- pre-LayerNorm blocks and positions counted from the most recent item; output scores use
  the tied item table without the paper's extra projection and bias.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from components.models.base import Recommender, TrainingPairs
from components.models.layers import ItemInput, TransformerParams
from components.models.zoo import register


class BERT4RecParams(TransformerParams):
    """BERT4Rec hyperparameters; ``mask_prob`` and ``last_item_mask_prob`` drive the Cloze task."""

    dropout: float = Field(0.3, ge=0, lt=1, description="dropout on embeddings and residuals")
    mask_prob: float = Field(0.3, gt=0, lt=1, description="share of history items masked")
    last_item_mask_prob: float = Field(
        0.3, ge=0, le=1, description="probability that the most recent item is masked"
    )


def row_per_position(values: Tensor, keep: Tensor) -> Tensor:
    """``[N, L]``: the whole row of ``values [B, L]`` once for each ``True`` in ``keep [B, L]``."""
    return values[:, None, :].expand(-1, values.shape[1], -1)[keep]


@register("bert4rec")
class BERT4Rec(Recommender):
    """Bidirectional self-attention; the output at ``[MASK]`` scores the missing item."""

    Params = BERT4RecParams
    input_kind = "masked"

    def __init__(self, params: BERT4RecParams, n_items: int, n_users: int, max_len: int) -> None:
        super().__init__(params, n_items, n_users, max_len)
        self.mask_token = n_items + 1
        self.encoder = params.encoder(n_items, max_len, special_tokens=1)

    @property
    def item_input(self) -> ItemInput:
        return self.encoder.items

    def mask_batch(
        self, sequences: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Cloze corruption of ``[B, L]`` sequences: ``(inputs, targets)`` with targets 0
        wherever nothing is predicted. Every non-empty row gets at least one mask."""
        real = sequences != 0
        draw = torch.rand(sequences.shape, generator=generator, device=sequences.device)
        masked = real & (draw < self.params.mask_prob)
        last_draw = torch.rand(sequences.shape[0], generator=generator, device=sequences.device)
        last = real[:, -1] & ((last_draw < self.params.last_item_mask_prob) | ~masked.any(dim=1))
        masked[:, -1] |= last
        inputs = sequences.masked_fill(masked, self.mask_token)
        targets = sequences.masked_fill(~masked, 0)
        return inputs, targets

    def training_pairs(self, batch: dict[str, Tensor]) -> TrainingPairs:
        inputs, targets = self.mask_batch(batch["sequences"])
        masked = inputs == self.mask_token
        events = batch.get("events")
        if events is not None:
            # a [MASK] carries no event type: at inference the appended one has none, and
            # the masked event's own type would tell the model what kind of event to predict
            events = events.masked_fill(masked, 0)
        table = self.encoder.items.table()  # items + [MASK], projected once per step
        hidden = self.encoder(inputs, causal=False, table=table, events=events)
        keep = targets != 0
        # every masked position sees the items left visible in its sequence, aged by their
        # distance from it (inference appends [MASK] after the last item: that item has age 0)
        seen = row_per_position(inputs.masked_fill(masked, 0), keep)
        seen_events = None if events is None else row_per_position(events, keep)
        steps = torch.arange(inputs.shape[1], device=inputs.device)
        ages = ((steps[:, None] - steps[None, :]).abs() - 1).clamp(min=0)
        ages = ages.expand(inputs.shape[0], -1, -1)[keep]
        return self.pairs(
            hidden[keep], targets[keep], seen, table[: self.n_items + 1], seen_events, ages
        )

    def output_embeddings(self) -> Tensor:
        return self.encoder.items.table()[: self.n_items + 1]

    def encode(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        masks = torch.full_like(histories[:, :1], self.mask_token)
        inputs = torch.cat([histories, masks], dim=1)[:, -self.max_len :]
        if events is not None:
            events = torch.cat([events, torch.zeros_like(masks)], dim=1)[:, -self.max_len :]
        return self.encoder(inputs, causal=False, events=events)[:, -1]
