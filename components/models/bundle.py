"""A trained model packaged with everything needed to use it elsewhere.

``ModelBundle.save(dir)`` writes ``weights.pt`` (state dict, data-dependent buffers
included), ``vocab.json``, ``popularity.npy`` and ``bundle.json`` (model name, validated
hyperparameters, sizes); ``ModelBundle.load(dir)`` rebuilds the same model from those
files alone, so serving and registry code never need the training data.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from components.data.sequences import PAD, Vocabulary, pad_left
from components.errors import RegistryError
from components.models.base import Recommender
from components.models.ranking import rank_top_k
from components.models.zoo import get_model_class, validate_params

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def build_model(
    name: str, params: dict[str, Any], n_items: int, n_users: int, max_len: int
) -> Recommender:
    """Instantiate the registered model ``name`` with validated ``params``."""
    cls = get_model_class(name)
    return cls(validate_params(name, params), n_items, n_users, max_len)


def _saved_params(name: str, params: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Any]:
    """``params`` as saved, with a switch the dict does not name set to what the weights
    hold (bundles written before repeat-aware scoring have no seen-item offset)."""
    if "seen_bias" in get_model_class(name).Params.model_fields and "seen_bias" not in params:
        return {**params, "seen_bias": "seen_bias_raw" in state}
    return params


@dataclass
class ModelBundle:
    """Model + vocabulary + the config that built it + training popularity (cold-start fallback)."""

    model: Recommender
    vocab: Vocabulary
    model_name: str
    params: dict[str, Any]
    max_len: int
    item_popularity: np.ndarray  # [n_items + 1] training counts; index 0 is 0
    #: the folder :meth:`load` read it from (its stored serving graph is opened from
    #: there: components/models/onnx_scorer.py); None for a bundle built in memory
    source: Path | None = None

    @property
    def device(self) -> torch.device:
        # parameters, then buffers: ``state_dict()`` here cost ~0.3 ms per call on the
        # serving path (three calls per request, profiled)
        for tensor in itertools.chain(self.model.parameters(), self.model.buffers()):
            return tensor.device
        return torch.device("cpu")

    def known_items(self) -> np.ndarray:
        """``[n_items + 1]`` bool: items the model can represent from a history (by id,
        text or category); all real items for id-only models. Padding is False."""
        items = self.model.item_input
        if items is None:
            known = np.ones(self.vocab.n_items + 1, dtype=bool)
            known[PAD] = False
            return known
        return items.known_items().cpu().numpy()

    # --- persistence ------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write a self-contained bundle into ``directory`` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(state, directory / "weights.pt")
        self.vocab.save(directory / "vocab.json")
        np.save(directory / "popularity.npy", np.asarray(self.item_popularity, dtype=np.float64))
        meta = {
            "format_version": FORMAT_VERSION,
            "model_name": self.model_name,
            "params": self.params,
            "max_len": self.max_len,
            "n_items": self.vocab.n_items,
            "n_users": self.vocab.n_users,
        }
        (directory / "bundle.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path, device: str | torch.device = "cpu") -> ModelBundle:
        """Rebuild a bundle written by :meth:`save`; missing files raise RegistryError."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "bundle.json").read_text())
            vocab = Vocabulary.load(directory / "vocab.json")
            state = torch.load(directory / "weights.pt", map_location=device, weights_only=True)
            popularity = np.load(directory / "popularity.npy")
        except FileNotFoundError as exc:
            raise RegistryError(
                f"{directory} is not a model bundle (missing {Path(exc.filename).name})"
            ) from None
        params = _saved_params(meta["model_name"], meta["params"], state)
        model = build_model(
            meta["model_name"], params, vocab.n_items, vocab.n_users, meta["max_len"]
        )
        model.load_state_dict(state)
        model.to(device).eval()
        return cls(
            model, vocab, meta["model_name"], params, int(meta["max_len"]), popularity, directory
        )

    # --- inference --------------------------------------------------------------------
    @torch.no_grad()
    def score(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        """``[B, n_items + 1]`` scores in eval mode on the model's device (column 0 = ``-inf``);
        ``events``: event-type indices aligned with ``histories`` (see :attr:`uses_events`)."""
        if self.model.training:  # eval() walks every submodule: ~0.06 ms per request
            self.model.eval()
        device = self.device
        histories = histories.to(device)
        users = users.to(device) if users is not None else None
        events = events.to(device) if events is not None and self.uses_events else None
        return self.model.score_all(histories, users, events)

    @property
    def uses_events(self) -> bool:
        """Whether the model reads each history event's type (``event_types: true``)."""
        return bool(self.params.get("event_types")) and bool(self.vocab.event_types)

    def event_indices(self, rows: list[list[str] | None], width: int) -> Tensor:
        """Left-padded ``[B, width]`` event-type indices of raw type names per row (each row
        aligned with the end of its history; unknown or missing types are 0, no embedding)."""
        out = np.zeros((len(rows), width), dtype=np.int64)
        for row, kinds in enumerate(rows):
            if kinds:
                tail = self.vocab.event_index(kinds[-width:])
                out[row, width - len(tail) :] = tail
        return torch.from_numpy(out)

    @torch.no_grad()
    def recommend(
        self,
        histories: Tensor,
        k: int,
        exclude_seen: bool = True,
        exclude: Tensor | None = None,
        users: Tensor | None = None,
        events: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` ``(items [B, k], scores [B, k])``; never item 0, ``k`` clipped to n_items.

        Rows with an empty history and no known user get the training popularity ranking
        (cold start). Excluded items rank below every other item; their score is ``-inf``.
        """
        histories = histories.to(self.device)
        scores = self.score(histories, users, events).float()
        return self.top_k(scores, histories, k, exclude_seen, exclude, users)

    def top_k(
        self,
        scores: Tensor,
        histories: Tensor,
        k: int,
        exclude_seen: bool = True,
        exclude: Tensor | None = None,
        users: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """:meth:`recommend` given the model's ``scores [B, n_items + 1]`` for ``histories``
        (the serving path scores with a compiled model: components/models/compiled.py)."""
        cold = (histories == PAD).all(dim=1)
        if users is not None:
            users = users.to(scores.device)
            cold &= (users < 0) | (users >= self.vocab.n_users)
        if bool(cold.any()):
            scores = scores.clone()
            popularity = torch.as_tensor(
                self.item_popularity, dtype=scores.dtype, device=scores.device
            )
            scores[cold] = popularity
        banned = [histories] if exclude_seen else []
        if exclude is not None:
            banned.append(exclude.to(scores.device))
        k = max(0, min(int(k), self.vocab.n_items))
        return rank_top_k(scores, torch.cat(banned, dim=1) if banned else None, k)

    def encode_histories(self, item_tokens: list[list[str]]) -> tuple[Tensor, list[list[str]]]:
        """Raw item tokens per row -> ``([B, max_len]`` left-padded indices, unknown tokens per row)."""
        lengths = np.array([len(row) for row in item_tokens], dtype=np.int64)
        flat = [str(token) for row in item_tokens for token in row]
        indices = self.vocab.item_index(flat)
        known = indices != PAD
        row_of = np.repeat(np.arange(len(item_tokens)), lengths)
        unknown: list[list[str]] = [[] for _ in item_tokens]
        for row, position in zip(row_of[~known], np.flatnonzero(~known), strict=True):
            unknown[row].append(flat[position])
        kept_lengths = np.bincount(row_of[known], minlength=len(item_tokens)).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(kept_lengths)]).astype(np.int64)
        padded = pad_left(indices[known], offsets, self.max_len)
        return torch.from_numpy(padded), unknown
