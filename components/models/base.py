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

Data-dependent state (popularity counts, similarity tables, the interaction graph) is
built by :meth:`Recommender.fit_data` from the training sequences and kept in buffers, so
``state_dict`` round-trips it; buffers whose size depends on the data are resized on load.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from components.data.sequences import Sequences

InputKind = Literal["causal", "masked", "session_graph", "interaction_graph", "none"]


class TrainingPairs(NamedTuple):
    """What one training batch yields: representation ``hidden[i]`` should score
    ``targets[i]`` highest among the rows of ``item_table`` (row 0 = padding)."""

    hidden: Tensor  # [N, D]
    targets: Tensor  # [N], item indices >= 1
    item_table: Tensor  # [n_items + 1, D]


class ModelParams(BaseModel):
    """Base of every model's hyperparameter class: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Recommender(torch.nn.Module):
    """Encode a history, score all items. Subclasses register with ``@register(name)``."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    input_kind: ClassVar[InputKind] = "causal"
    #: False for models fit by counting (``fit_data``) rather than by gradient steps.
    trainable: ClassVar[bool] = True

    def __init__(self, params: Any, n_items: int, n_users: int, max_len: int) -> None:
        super().__init__()
        self.params = params
        self.n_items = int(n_items)
        self.n_users = int(n_users)
        self.max_len = int(max_len)

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
    def encode(self, histories: Tensor, users: Tensor | None = None) -> Tensor:
        """``[B, D]`` representation of each history (what the next item is scored with)."""
        raise NotImplementedError

    def score_all(self, histories: Tensor, users: Tensor | None = None) -> Tensor:
        """``[B, n_items + 1]`` scores; column 0 (padding) is ``-inf``."""
        scores = self.encode(histories, users) @ self.output_embeddings().T
        return mask_padding_column(scores)

    # --- persistence of data-sized buffers --------------------------------------------
    def _load_from_state_dict(  # type: ignore[override]
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
