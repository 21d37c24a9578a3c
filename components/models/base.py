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

Repeat-aware scoring (``seen_bias``): a model whose params enable it learns one logit
offset that is added to every item already in the history it scores from, in training
(the items visible at each predicted position) and at inference alike. It starts at 0
and follows the data: on logs where people rarely consume an item twice (Amazon Beauty has
no repeats at all) it becomes strongly negative, where repeat purchases are common it
becomes positive. Without it a tied-embedding model ranks the item it has just read near
the top, because an embedding is most similar to itself.

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
    ``i`` (0 = none) and ``seen_bias`` is the learned logit offset for them."""

    hidden: Tensor  # [N, D]
    targets: Tensor  # [N], item indices >= 1
    item_table: Tensor  # [n_items + 1, D]
    seen: Tensor | None = None  # [N, H] item indices, 0 = padding
    seen_bias: Tensor | None = None  # scalar
    #: [n_items + 1] bool: the items the loss may rank (None = all). Content models leave
    #: out items without training events: a cold item is never a target, and as an
    #: ever-present negative its text would be learned as "never next" (on ml-100k that
    #: sent cold-item HR@10 to 0).
    candidates: Tensor | None = None


#: The seen-item offset is stored divided by this gain, so Adam (whose steps are about
#: ``lr`` in parameter units) moves the offset this much faster than ordinary weights:
#: it must travel several logits within the first epoch to be useful.
SEEN_BIAS_GAIN = 10.0


class ModelParams(BaseModel):
    """Base of every model's hyperparameter class: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class SeenBiasParams(ModelParams):
    """Hyperparameters of a model that can learn repeat-aware scoring."""

    seen_bias: bool = Field(
        True,
        description="learn one logit offset for items already in the history (repeat-aware "
        "scoring; strongly negative on data without repeats, positive with many repeats)",
    )


def add_seen_offset_(scores: Tensor, seen: Tensor, offset: Tensor) -> Tensor:
    """Add ``offset`` in place to ``scores [N, C]`` on each row's distinct items in
    ``seen [N, H]``; returns ``scores``.

    Touches only ``N x H`` entries: no dense ``[N, C]`` mask and no copy of ``scores``
    (for LightGCN's 8,192 x 12,102 logits a copy cost more than the softmax). Each row of
    ``seen`` is sorted, repeats of an item are pointed at the padding column 0, then one
    ``scatter_add_``. Column 0 may receive offsets; callers mask it to ``-inf`` anyway.
    Autograd-safe on a fresh matmul output (its backward does not need the output).
    """
    ordered, _ = seen.sort(dim=1)
    repeat = torch.zeros_like(ordered, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    distinct = ordered.masked_fill(repeat, 0)
    values = offset.to(scores.dtype).expand(distinct.shape)
    return scores.scatter_add_(1, distinct, values)


def causal_seen(inputs: Tensor) -> Tensor:
    """``[B, L, L]``: row ``t`` of sequence ``b`` holds ``inputs[b, :t + 1]`` (later steps
    are 0), the items a causal model has read when it predicts from step ``t``."""
    length = inputs.shape[1]
    visible = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril()
    return inputs[:, None, :].expand(-1, length, -1).masked_fill(~visible, 0)


class Recommender(torch.nn.Module):
    """Encode a history, score all items. Subclasses register with ``@register(name)``."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
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

    def pairs(
        self,
        hidden: Tensor,
        targets: Tensor,
        seen: Tensor | None = None,
        item_table: Tensor | None = None,
    ) -> TrainingPairs:
        """:class:`TrainingPairs` against ``item_table`` (default :meth:`output_embeddings`),
        carrying ``seen`` when this model learns the seen-item offset."""
        table = self.output_embeddings() if item_table is None else item_table
        bias = self.seen_bias
        items = self.item_input
        candidates = items.training_candidates() if items is not None else None
        return TrainingPairs(
            hidden, targets, table, seen if bias is not None else None, bias, candidates
        )

    def causal_pairs(
        self, hidden: Tensor, inputs: Tensor, targets: Tensor, item_table: Tensor | None = None
    ) -> TrainingPairs:
        """Pairs of a causal model: hidden state ``[B, L, D]`` at each real position of
        ``inputs`` scores the next item ``targets [B, L]`` (0 = no target), having read
        ``inputs[:, :t + 1]``."""
        keep = targets != 0
        seen = causal_seen(inputs)[keep] if self.learns_seen_bias else None
        return self.pairs(hidden[keep], targets[keep], seen, item_table)

    def add_seen_bias(self, scores: Tensor, histories: Tensor) -> Tensor:
        """Fresh ``scores [B, n_items + 1]`` with the learned offset added (in place) to each
        row's history items."""
        bias = self.seen_bias
        if bias is None:
            return scores
        return add_seen_offset_(scores, histories, bias)

    # --- data-dependent setup ---------------------------------------------------------
    def fit_data(self, train: Sequences) -> None:
        """Build state that comes from the training data rather than gradients (default: none)."""

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
        return mask_padding_column(self.add_seen_bias(scores, histories))

    # --- persistence of data-sized buffers --------------------------------------------
    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        for name, buf in list(self._buffers.items()):
            incoming = state_dict.get(prefix + name)
            if buf is not None and incoming is not None and incoming.shape != buf.shape:
                self._buffers[name] = torch.empty_like(incoming, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


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
