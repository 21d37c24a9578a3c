"""The one interface every recommender implements.

A :class:`Recommender` is a plain ``torch.nn.Module``: it maps a batch of left-padded
histories (item indices, 0 = padding, most recent item in the last column) to scores
over the whole catalogue. Lightning, data loading and losses live in
``components.training``; a model only says

- what its training batches look like (:attr:`Recommender.input_kind`, which picks the
  DataModule: ``causal`` / ``masked`` sequences, ``session_graph`` prefixes,
  ``interaction_graph`` user-item pairs; ``none`` for models fit without gradients),
- how to turn such a batch into ``(representations [N, D], target items [N])``
  (:meth:`Recommender.training_pairs`), scored against :meth:`output_embeddings`,
- and how to score all items for a history (:meth:`Recommender.score_all`).

Repeat-aware scoring (``seen_bias``): a model whose params enable it learns a logit
offset that is added to every item already in the history it scores from, in training
(the items visible at each predicted position) and at inference alike. It starts at 0
and follows the data: on logs where people rarely consume an item twice (Amazon Beauty has
no repeats at all) it becomes strongly negative, where repeat purchases are common it
becomes positive. Without it a tied-embedding model ranks the item it has just read near
the top, because an embedding is most similar to itself.

A model that reads event types (or sets recency buckets, see
:meth:`SeenBiasParams.seen_offset_shape`) also learns a table of offsets by (event type,
recency bucket) of the seen event: a history item gets the base offset once, plus the
table's entry once for each distinct event type it was seen with (at that type's most
recent occurrence). So "carted two events ago" and "viewed ten events ago" lift an item
differently, which one offset for every seen item cannot express (on the purchase funnel,
where purchases are of recently carted items, the single offset gave event types no gain).

Data-dependent state (popularity counts, similarity tables, the interaction graph) is
built by :meth:`Recommender.fit_data` from the training sequences and kept in buffers, so
``state_dict`` round-trips it; buffers whose size depends on the data are resized on load.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from components.data.sequences import Sequences

InputKind = Literal["causal", "masked", "session_graph", "interaction_graph", "none"]


class TrainingPairs(NamedTuple):
    """What one training batch yields: representation ``hidden[i]`` should score
    ``targets[i]`` highest among the rows of ``item_table`` (row 0 = padding).

    With repeat-aware scoring, ``seen[i]`` lists the items visible when predicting row
    ``i`` (0 = none) and ``seen_offsets[i, j]`` is the learned logit offset that entry
    ``seen[i, j]`` adds to its item (:meth:`Recommender.seen_offsets`: 0 on padding and on
    repeats, so summing over ``j`` gives each item's offset)."""

    hidden: Tensor  # [N, D]
    targets: Tensor  # [N], item indices >= 1
    item_table: Tensor  # [n_items + 1, D]
    seen: Tensor | None = None  # [N, H] item indices, 0 = padding
    seen_offsets: Tensor | None = None  # [N, H] logit offset of each entry of ``seen``
    #: [n_items + 1] bool: the items the loss may rank (None = all). Content models leave
    #: out items without training events: a cold item is never a target, and as an
    #: ever-present negative its text would be learned as "never next" (on ml-100k that
    #: sent cold-item HR@10 to 0).
    candidates: Tensor | None = None


#: The seen-item offset is stored divided by this gain, so Adam (whose steps are about
#: ``lr`` in parameter units) moves the offset this much faster than ordinary weights:
#: it must travel several logits within the first epoch to be useful.
SEEN_BIAS_GAIN = 10.0
#: The same for the table by (event type, recency bucket), which needs a larger gain: on
#: the funnel benchmark (600 users, ~60 steps in 6 epochs) at 10 the cart and view entries
#: had moved apart by only 0.1-0.25 logits; at 40 next-purchase HR@10 went from 0.75 to 0.89
#: (seed 1; ids only: 0.56) with overall HR@10 unchanged. Each step still moves an entry
#: by at most ~40 x lr (0.04 logits at lr 1e-3).
SEEN_TABLE_GAIN = 40.0


class ModelParams(BaseModel):
    """Base of every model's hyperparameter class: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class SeenBiasParams(ModelParams):
    """Hyperparameters of a model that can learn repeat-aware scoring."""

    seen_bias: bool = Field(
        True,
        description="learn a logit offset for items already in the history (repeat-aware "
        "scoring; strongly negative on data without repeats, positive with many repeats)",
    )

    def seen_recency_edges(self) -> list[int]:
        """Ages (0 = the last item read) at which a new recency bucket of the seen-item
        offset starts; [] = one bucket (models whose histories carry no order)."""
        return []

    def seen_offset_shape(self) -> tuple[int, int]:
        """``(event-type rows, recency buckets)`` of the seen-offset table; ``(1, 1)`` = one
        offset for every seen item (models whose histories carry neither types nor order)."""
        return 1, len(self.seen_recency_edges()) + 1


class SeenItems(NamedTuple):
    """A history's distinct items with their learned offsets (:meth:`Recommender.seen_offsets`).

    ``items [N, H]`` is each row's history sorted by item; ``offsets [N, H]`` the logit each
    entry adds to its item (0 on padding and repeats): an item's offset is the sum of its
    entries' offsets."""

    items: Tensor
    offsets: Tensor


def add_seen_offset_(scores: Tensor, seen: Tensor, offsets: Tensor) -> Tensor:
    """Add ``offsets [N, H]`` in place to ``scores [N, C]`` at the items ``seen [N, H]``
    (several entries of one item add up); returns ``scores``.

    Touches only ``N x H`` entries: no dense ``[N, C]`` mask and no copy of ``scores``
    (for LightGCN's 8,192 x 12,102 logits a copy cost more than the softmax): one
    ``scatter_add_``. Column 0 (padding) receives 0. Autograd-safe on a fresh matmul output
    (its backward does not need the output).
    """
    return scores.scatter_add_(1, seen, offsets.to(scores.dtype))


def seen_offset_at(seen: SeenItems, candidates: Tensor) -> Tensor:
    """``[N, C]`` offset of candidate items ``[N, C]`` (per row) or ``[1, C]`` (shared)."""
    hit = seen.items[:, :, None] == candidates[:, None, :]  # [N, H, C]
    return (hit * seen.offsets[:, :, None]).sum(dim=1)


def seen_offset_shared(seen: SeenItems, candidates: Tensor, n_rows: int) -> Tensor:
    """:func:`seen_offset_at` for candidates ``[C]`` shared by every row (item ids below
    ``n_rows``), in ``N x (H + C)`` work instead of an ``[N, H, C]`` comparison: each seen
    entry's offset is added at its item's column (a lookup from item to column), and the
    columns of repeated candidates read the first one's. The sampled losses score 1,024
    shared negatives for ~400 positions of up to 50 seen items a step; there the
    comparison cost twice the full-catalogue softmax (profiled on Beauty)."""
    n_candidates = candidates.shape[0]
    column = torch.full((n_rows,), n_candidates, dtype=torch.long, device=candidates.device)
    column[candidates.flip(0)] = torch.arange(
        n_candidates - 1, -1, -1, device=candidates.device
    )  # reversed so that a repeated candidate maps to its first column
    dense = seen.offsets.new_zeros(seen.offsets.shape[0], n_candidates + 1)  # last: not drawn
    dense = dense.scatter_add(1, column[seen.items], seen.offsets)
    return dense[:, column[candidates]]


def left_padded_ages(histories: Tensor) -> Tensor:
    """``[1, H]`` age of each column of left-padded histories: 0 = the most recent (last)."""
    length = histories.shape[1]
    return (length - 1 - torch.arange(length, device=histories.device))[None]


def distinct_seen(
    seen: Tensor, events: Tensor, buckets: Tensor, base: Tensor, table: Tensor | None
) -> SeenItems:
    """Offsets of the history ``seen [N, H]`` (0 = padding): ``base`` once per distinct
    item, plus ``table[event type, recency bucket]`` once per distinct (item, event type),
    taken at that pair's most recent occurrence (smallest bucket).

    One sort by (item, type, bucket) puts each item's entries together with its types'
    most recent occurrence first, so both "first of its item" and "first of its pair" are
    comparisons with the previous entry."""
    # the key's radixes are the table's sizes (event types and buckets index it), not the
    # largest values present: no tensor value is read back to Python, so a TorchScript trace
    # of the scoring (components/models/compiled.py) holds for every input; without a table
    # only the items matter
    if table is None:
        key = seen
    else:
        n_types, n_buckets = table.shape
        key = (seen * n_types + events) * n_buckets + buckets
    order = key.argsort(dim=1)
    items, kinds, ages = seen.gather(1, order), events.gather(1, order), buckets.gather(1, order)
    first_item = torch.ones_like(items, dtype=torch.bool)
    first_item[:, 1:] = items[:, 1:] != items[:, :-1]
    offsets = base.expand(items.shape) * first_item
    if table is not None:
        first_pair = first_item.clone()  # not ``|=``: the ONNX export has no in-place or
        first_pair[:, 1:] = first_item[:, 1:] | (kinds[:, 1:] != kinds[:, :-1])
        offsets = offsets + table[kinds, ages] * first_pair
    return SeenItems(items, offsets.masked_fill(items == 0, 0.0))


def causal_seen(inputs: Tensor) -> Tensor:
    """``[B, L, L]``: row ``t`` of sequence ``b`` holds ``inputs[b, :t + 1]`` (later steps
    are 0), the items a causal model has read when it predicts from step ``t``."""
    length = inputs.shape[1]
    visible = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril()
    return inputs[:, None, :].expand(-1, length, -1).masked_fill(~visible, 0)


def causal_ages(length: int, device: torch.device) -> Tensor:
    """``[L, L]``: age of position ``p`` when predicting from step ``t`` (``t - p``; 0 where
    ``p > t``, which :func:`causal_seen` leaves empty)."""
    steps = torch.arange(length, device=device)
    return (steps[:, None] - steps[None, :]).clamp(min=0)


class Recommender(torch.nn.Module):
    """Encode a history, score all items. Subclasses register with ``@register(name)``."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    seen_age_edges: Tensor  # recency bucket edges of the seen-item offsets (a buffer)
    input_kind: ClassVar[InputKind] = "causal"
    #: False for models fit by counting (``fit_data``) rather than by gradient steps.
    trainable: ClassVar[bool] = True
    #: False for models whose scores do not depend on the history (nothing to explain).
    uses_history: ClassVar[bool] = True

    def __init__(self, params: Any, n_items: int, n_users: int, max_len: int) -> None:
        super().__init__()
        self.params = params
        self.n_items = int(n_items)
        self.n_users = int(n_users)
        self.max_len = int(max_len)
        uses_seen_bias = isinstance(params, SeenBiasParams) and params.seen_bias
        self.seen_bias_raw = torch.nn.Parameter(torch.zeros(())) if uses_seen_bias else None
        shape = params.seen_offset_shape() if uses_seen_bias else (1, 1)
        #: offsets by (event type, recency bucket) on top of the base (None: base only)
        self.seen_bias_table_raw = (
            torch.nn.Parameter(torch.zeros(shape)) if shape != (1, 1) else None
        )
        edges = params.seen_recency_edges() if uses_seen_bias else []
        self.register_buffer("seen_age_edges", torch.tensor(edges, dtype=torch.long), False)

    @property
    def item_input(self) -> Any:
        """The shared :class:`~components.models.layers.ItemInput` of a sequence model
        (``None`` for models that keep their own item table)."""
        return None

    @property
    def learns_seen_bias(self) -> bool:
        """Whether this model has the seen-item offset (``params.seen_bias``)."""
        return self.seen_bias_raw is not None

    @property
    def seen_bias(self) -> Tensor | None:
        """The learned logit offset for items already in the history (``None`` = off)."""
        return None if self.seen_bias_raw is None else self.seen_bias_raw * SEEN_BIAS_GAIN

    def learned_seen_offset(self) -> float | None:
        """:attr:`seen_bias` as a number for reports (``None`` = off)."""
        bias = self.seen_bias
        return None if bias is None else float(bias.detach())

    def learned_seen_table(self) -> list[list[float]] | None:
        """The offsets an item seen once gets, in logits, by ``[event type][recency bucket]``
        (base + table; row 0 = no/unknown type; ``None`` without a table)."""
        if self.seen_bias_raw is None or self.seen_bias_table_raw is None:
            return None
        offsets = self.seen_bias_raw * SEEN_BIAS_GAIN + self.seen_bias_table_raw * SEEN_TABLE_GAIN
        return offsets.detach().tolist()

    def seen_offsets(
        self, seen: Tensor, events: Tensor | None = None, ages: Tensor | None = None
    ) -> SeenItems | None:
        """The learned offsets of the items in ``seen [N, H]`` (0 = padding; ``None`` when
        this model has no seen-item offset). ``events`` are the entries' event types (None:
        unknown) and ``ages`` their distance from the predicted position (0 = the last item
        read; default: ``seen`` is left padded, most recent last)."""
        base = self.seen_bias
        if base is None:
            return None
        table = self.seen_bias_table_raw
        zeros = torch.zeros_like(seen)
        if table is None:
            return distinct_seen(seen, zeros, zeros, base, None)
        kinds = zeros if events is None else events.clamp(0, table.shape[0] - 1)
        ages = left_padded_ages(seen) if ages is None else ages
        buckets = torch.bucketize(ages, self.seen_age_edges, right=True).expand_as(seen)
        return distinct_seen(seen, kinds, buckets, base, table * SEEN_TABLE_GAIN)

    def seen_offsets_at(
        self, histories: Tensor, candidates: Tensor, events: Tensor | None = None
    ) -> Tensor | None:
        """``[B, C]`` learned offsets of ``candidates [B, C]`` (or ``[1, C]``, shared) given
        left-padded ``histories`` (and their ``events``), as :meth:`score_all` adds them to
        those columns; ``None`` when this model has no seen-item offset."""
        seen = self.seen_offsets(histories, events)
        return None if seen is None else seen_offset_at(seen, candidates)

    def pairs(
        self,
        hidden: Tensor,
        targets: Tensor,
        seen: Tensor | None = None,
        item_table: Tensor | None = None,
        seen_events: Tensor | None = None,
        seen_ages: Tensor | None = None,
    ) -> TrainingPairs:
        """:class:`TrainingPairs` against ``item_table`` (default :meth:`output_embeddings`),
        carrying ``seen`` (with event types and ages, see :meth:`seen_offsets`) when this
        model learns the seen-item offset."""
        table = self.output_embeddings() if item_table is None else item_table
        items = self.item_input
        candidates = items.training_candidates() if items is not None else None
        offsets = None if seen is None else self.seen_offsets(seen, seen_events, seen_ages)
        if offsets is None:
            return TrainingPairs(hidden, targets, table, candidates=candidates)
        return TrainingPairs(hidden, targets, table, *offsets, candidates)

    def causal_pairs(
        self,
        hidden: Tensor,
        inputs: Tensor,
        targets: Tensor,
        item_table: Tensor | None = None,
        events: Tensor | None = None,
    ) -> TrainingPairs:
        """Pairs of a causal model: hidden state ``[B, L, D]`` at each real position of
        ``inputs`` scores the next item ``targets [B, L]`` (0 = no target), having read
        ``inputs[:, :t + 1]`` (of event types ``events[:, :t + 1]``)."""
        keep = targets != 0
        if not self.learns_seen_bias:
            return self.pairs(hidden[keep], targets[keep], None, item_table)
        seen = causal_seen(inputs)[keep]
        if self.seen_bias_table_raw is None:  # one offset: types and ages are not read
            return self.pairs(hidden[keep], targets[keep], seen, item_table)
        seen_events = None if events is None else causal_seen(events)[keep]
        ages = causal_ages(inputs.shape[1], inputs.device).expand(inputs.shape[0], -1, -1)
        return self.pairs(hidden[keep], targets[keep], seen, item_table, seen_events, ages[keep])

    def add_seen_bias(
        self, scores: Tensor, histories: Tensor, events: Tensor | None = None
    ) -> Tensor:
        """Fresh ``scores [B, n_items + 1]`` with the learned offsets added (in place) to
        each row's history items (``events``: the history's event types)."""
        seen = self.seen_offsets(histories, events)
        if seen is None:
            return scores
        return add_seen_offset_(scores, *seen)

    # --- data-dependent setup ---------------------------------------------------------
    def fit_data(self, train: Sequences) -> None:
        """Build state that comes from the training data rather than gradients (default:
        the item input layer's data-dependent initialisation, if it has one)."""
        items = self.item_input
        if items is not None and hasattr(items, "fit_data"):
            items.fit_data(train)

    # --- training ---------------------------------------------------------------------
    def training_pairs(self, batch: dict[str, Tensor]) -> TrainingPairs:
        """Representations, their target items and the item table for one batch of
        :attr:`input_kind` (see :mod:`components.training.datamodules`)."""
        raise NotImplementedError(f"{self.name} is not trained by gradient steps")

    def output_embeddings(self) -> Tensor:
        """``[n_items + 1, D]`` item table that representations are scored against."""
        raise NotImplementedError(f"{self.name} has no output embedding table")

    # --- inference --------------------------------------------------------------------
    def encode(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        """``[B, D]`` representation of each history (what the next item is scored with);
        ``events`` are event-type indices aligned with ``histories`` (models without an
        event-type input ignore them)."""
        raise NotImplementedError

    def encode_deletions(
        self, histories: Tensor, positions: Tensor, events: Tensor | None = None
    ) -> Tensor | None:
        """``[Q, E + 1, D]``: :meth:`encode` of each of ``histories`` (``[Q, n]`` item
        indices, oldest first, no padding, ``n <= max_len``; ``events`` aligned with them)
        in row 0 and of it without the event at ``positions[e]`` in row ``e + 1``, by a
        model-specific shortcut equal (up to float rounding) to encoding the left-padded
        variants. ``None`` (the default) = no shortcut: callers encode the variant rows."""
        return None

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        """``[B, n_items + 1]`` scores; column 0 (padding) is ``-inf``."""
        scores = self.encode(histories, users, events) @ self.output_embeddings().T
        return mask_padding_column(self.add_seen_bias(scores, histories, events))

    # --- persistence of data-sized buffers --------------------------------------------
    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        table = self.seen_bias_table_raw
        if table is not None and prefix + "seen_bias_table_raw" not in state_dict:
            # saved before offsets by event type: every type and age gets the base alone
            state_dict[prefix + "seen_bias_table_raw"] = torch.zeros_like(table)
        for name, buf in list(self._buffers.items()):
            incoming = state_dict.get(prefix + name)
            if buf is not None and incoming is not None and incoming.shape != buf.shape:
                self._buffers[name] = torch.empty_like(incoming, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CausalRecommender(Recommender):
    """A next-item model: the hidden state at each position of a history (having read the
    items up to it) scores the next item against the model's tied item input table.

    Subclasses give :attr:`item_input` and :meth:`hidden_states`; training pairs (every
    real position predicts its next item), the output table and :meth:`encode` (the state
    after the last item) are shared by every causal model (SASRec, BSARec, GRU4Rec,
    LRURec).
    """

    input_kind: ClassVar[InputKind] = "causal"

    def hidden_states(
        self, histories: Tensor, table: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        """``[B, L, D]``: the state at position ``t`` depends only on positions ``<= t``
        (``table``: the item input table when the caller already has it)."""
        raise NotImplementedError

    def training_pairs(self, batch: dict[str, Tensor]) -> TrainingPairs:
        """Every position of each sequence predicts its next item (``targets [B, L]``), or,
        with ``train.samples: prefixes`` (``targets [B]``), each left-padded prefix's last
        position predicts its one target."""
        table = self.output_embeddings()  # computed once for inputs and scoring
        inputs, targets = batch["inputs"], batch["targets"]
        if targets.dim() == 1:
            hidden = self.hidden_states(inputs, table)[:, -1]
            return self.pairs(hidden, targets, inputs if self.learns_seen_bias else None, table)
        events = batch.get("input_events")
        hidden = self.hidden_states(inputs, table, events)
        return self.causal_pairs(hidden, inputs, targets, table, events)

    def output_embeddings(self) -> Tensor:
        return self.item_input.table()

    def encode(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        return self.hidden_states(histories, events=events)[:, -1]


def mask_padding_column(scores: Tensor) -> Tensor:
    """Set column 0 (the padding item) to ``-inf`` so it is never ranked or recommended."""
    scores = scores.clone() if scores.requires_grad else scores
    scores[:, 0] = float("-inf")
    return scores


def trim_left_padding(histories: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Drop leading columns that are padding in every row (no effect on pad-blind models)."""
    nonempty = (histories != 0).any(dim=0)
    keep_from = int(nonempty.nonzero()[0]) if bool(nonempty.any()) else histories.shape[1] - 1
    return tuple(t[:, keep_from:] for t in (histories, *others))
