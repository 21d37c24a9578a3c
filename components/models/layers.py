"""Building blocks shared by the sequence models.

- :class:`ItemInput`: the one input layer of every sequence model (SASRec, BERT4Rec,
  GRU4Rec; new models should take it too). An item's representation is the sum of
  an id embedding (zero for items without training events once content is used), a learned
  projection of its language-model text vector (a fixed buffer: the whole catalogue is
  projected once per step) and the mean of its category embeddings, each switched by
  ``model.params.item_features``; ``event_types: true`` adds an event-type embedding at each
  history position. The same table scores all items, so an item with no events is scorable.
- A small pre-LayerNorm Transformer encoder over ``scaled_dot_product_attention`` with an
  explicit boolean mask, so causal and bidirectional models share one implementation and
  left padding is handled the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from components.data.sequences import Sequences
from components.models.base import SeenBiasParams

ItemFeature = Literal["id", "text", "category"]


class ItemInputParams(SeenBiasParams):
    """What an item is to the model (see :class:`ItemInput`).

    ``text_dim``, ``n_categories``, ``category_slots`` and ``n_event_types`` are sizes taken
    from the data when a model is built for training (0 = absent); saved with the bundle."""

    item_features: list[ItemFeature] = Field(
        ["id"],
        min_length=1,
        description="item representation: any of id (learned per item), text (projected "
        "language-model vector of the item's text), category (mean of category embeddings)",
    )
    event_types: bool = Field(
        False, description="add an event-type embedding (view, cart, ...) at each history position"
    )
    id_dropout: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="with content features: share of items whose id embedding is left out at "
        "each training step (kept ones scaled by 1 / (1 - id_dropout), inverted dropout), so "
        "the model also learns to score items from content alone (cold items have content "
        "only; unscaled, warm items outranked them and cold-item HR@10 on ml-100k was 0)",
    )
    seen_recency: list[int] = Field(
        [],
        description="ages (0 = the item read last) at which the seen-item offset starts a new "
        "recency bucket, e.g. [1, 5, 20]; [] = one offset whatever the age (see "
        "components.models.base: with event_types the offset is also learned per event type)",
    )
    item_init: Literal["normal", "transitions"] = Field(
        "normal",
        description="initial id embeddings: normal = N(0, 0.02); transitions = a spectral "
        "embedding of the training data's item-transition graph at the same scale "
        "(components.models.warm_start), computed once before training",
    )
    text_dim: int = Field(0, ge=0, description="text vector width (set from the catalogue)")
    n_categories: int = Field(0, ge=0, description="distinct categories (set from the catalogue)")
    category_slots: int = Field(1, ge=1, description="most categories of one item (set from data)")
    n_event_types: int = Field(0, ge=0, description="distinct event types (set from the data)")

    @field_validator("seen_recency")
    @classmethod
    def _increasing(cls, edges: list[int]) -> list[int]:
        if any(a >= b for a, b in zip(edges, edges[1:], strict=False)) or any(e < 1 for e in edges):
            raise ValueError("seen_recency must be increasing ages >= 1, e.g. [1, 5, 20]")
        return edges

    def seen_recency_edges(self) -> list[int]:
        return list(self.seen_recency)

    def seen_offset_shape(self) -> tuple[int, int]:
        """One row per event type (plus "none") when the model reads event types."""
        rows = self.n_event_types + 1 if self.event_types else 1
        return rows, len(self.seen_recency) + 1

    @property
    def uses_content(self) -> bool:
        """Whether items are represented by more than their id."""
        return bool({"text", "category"} & set(self.item_features))

    def item_input(self, n_items: int, dim: int, special_tokens: int = 0) -> ItemInput:
        """The input layer these settings describe."""
        return ItemInput(n_items, dim, self, special_tokens)


class ItemInput(nn.Module):
    """Item table ``[n_items + 1 + special_tokens, D]`` and history embeddings.

    Row 0 is padding (always zero). ``special_tokens`` extra rows after the items (BERT4Rec's
    ``[MASK]``) are always learned embeddings. Content buffers (``text``, ``categories``)
    are filled by :meth:`set_content`; ``has_id`` marks items whose id embedding is used
    (all by default; with content features, only items seen in training).

    In eval mode without gradients the table is computed once and cached (cleared by
    ``train()`` and by loading weights), so serving never re-projects the catalogue.
    """

    def __init__(
        self, n_items: int, dim: int, params: ItemInputParams, special_tokens: int = 0
    ) -> None:
        super().__init__()
        features = set(params.item_features)
        rows = n_items + 1
        self.n_items = n_items
        self.id_dropout = params.id_dropout
        self.item_init = params.item_init
        self.ids = nn.Embedding(rows, dim, padding_idx=0) if "id" in features else None
        has_id = torch.ones(rows, dtype=torch.bool)
        has_id[0] = False
        self.register_buffer("has_id", has_id)
        self.text_proj: nn.Linear | None = None
        self.categories_emb: nn.Embedding | None = None
        self.event_emb: nn.Embedding | None = None
        if "text" in features:
            if params.text_dim <= 0:
                raise ValueError("item_features has 'text' but no text vectors were given")
            # uninitialised: filled by set_content or by loading weights, and never touched
            # before, so a 1M-item catalogue's vectors are not resident twice (zeros here
            # were a second full copy next to the encoder's array until set_content)
            self.register_buffer("text", torch.empty(rows, params.text_dim))
            self.text_proj = nn.Linear(params.text_dim, dim, bias=False)
        if "category" in features:
            self.register_buffer(
                "categories", torch.zeros(rows, params.category_slots, dtype=torch.long)
            )
            self.categories_emb = nn.Embedding(params.n_categories + 1, dim, padding_idx=0)
        if params.event_types:
            self.event_emb = nn.Embedding(params.n_event_types + 1, dim, padding_idx=0)
        self.special = nn.Embedding(special_tokens, dim) if special_tokens else None
        for module in (self.ids, self.categories_emb, self.event_emb, self.special):
            if module is not None:
                nn.init.normal_(module.weight, std=0.02)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
        if self.text_proj is not None:
            nn.init.normal_(self.text_proj.weight, std=0.02)
        self._cached: Tensor | None = None

    # --- content ----------------------------------------------------------------------
    def set_content(
        self,
        text: np.ndarray | Tensor | None,
        categories: np.ndarray | Tensor | None,
        trained_items: np.ndarray | Tensor | None,
    ) -> None:
        """Fill the content buffers (``[n_items + 1, ...]``, row 0 = padding) and, when
        content is used, keep id embeddings only for ``trained_items`` (bool mask)."""
        if self.text_proj is not None and text is not None:
            self.text = torch.as_tensor(text, dtype=torch.float32)  # shares numpy memory
        elif self.text_proj is not None:
            self.text.zero_()  # no vectors given: "no text" rather than the unfilled buffer
        if self.categories_emb is not None and categories is not None:
            self.categories = torch.as_tensor(categories, dtype=torch.long)
        content = self.text_proj is not None or self.categories_emb is not None
        if content and trained_items is not None:
            mask = torch.as_tensor(trained_items, dtype=torch.bool).clone()
            mask[0] = False
            self.has_id = mask
        self._cached = None

    def fit_data(self, train: Sequences) -> None:
        """Data-dependent initialisation: with ``item_init: transitions``, the id table
        starts from the training data's item-transition graph (see
        :mod:`components.models.warm_start`)."""
        if self.item_init == "transitions" and self.ids is not None:
            from components.models.warm_start import warm_start_ids  # scipy only when asked

            warm_start_ids(self.ids.weight, train, self.n_items)
            self._cached = None

    def training_candidates(self) -> Tensor | None:
        """Items a training loss may rank: with content features, those with an id
        embedding (training events); None (all items) for id-only models."""
        if self.text_proj is None and self.categories_emb is None:
            return None
        return self.has_id

    def known_items(self) -> Tensor:
        """``[n_items + 1]`` bool: items with any representation (id, text or category)."""
        known = self.has_id.clone() if self.ids is not None else torch.zeros_like(self.has_id)
        if self.text_proj is not None:
            known |= self.text.abs().sum(dim=1) > 0
        if self.categories_emb is not None:
            known |= (self.categories > 0).any(dim=1)
        known[0] = False
        return known

    # --- the table --------------------------------------------------------------------
    def table(self) -> Tensor:
        """``[n_items + 1 + special_tokens, D]``: one representation per item, padding 0."""
        frozen = not self.training and not torch.is_grad_enabled()
        if frozen and self._cached is not None:
            return self._cached
        table = self._item_rows()
        if self.special is not None:
            table = torch.cat([table, self.special.weight], dim=0)
        if frozen:
            self._cached = table
        return table

    def _item_rows(self) -> Tensor:
        out: Tensor | None = None
        if self.ids is not None:
            keep = self.has_id.to(self.ids.weight.dtype)
            if self.training and self.id_dropout > 0 and self.training_candidates() is not None:
                # Inverted dropout: kept ids are scaled by 1 / (1 - p) so that the id term's
                # expected size in training is the one it has at evaluation. Unscaled, a warm
                # item carries its whole id term at evaluation but only (1 - p) of it on
                # average in training: every warm item got an extra positive offset over
                # content-only (cold) items, and cold-item HR@10 on ml-100k stayed 0.
                drawn = torch.rand(keep.shape, device=keep.device) >= self.id_dropout
                keep = keep * drawn.to(keep.dtype) / (1.0 - self.id_dropout)
            out = self.ids.weight * keep[:, None]
        if self.text_proj is not None:
            projected = self.text_proj(self.text)
            out = projected if out is None else out + projected
        if self.categories_emb is not None:
            slots = self.categories_emb(self.categories)  # [rows, S, D]
            count = (self.categories > 0).sum(dim=1, keepdim=True).clamp(min=1)
            mean = slots.sum(dim=1) / count
            out = mean if out is None else out + mean
        assert out is not None
        return out

    def forward(self, histories: Tensor, table: Tensor, events: Tensor | None = None) -> Tensor:
        """``[B, L, D]`` embeddings of a history (``events`` = event-type ids, 0 = none)."""
        x = F.embedding(histories, table)
        if self.event_emb is not None and events is not None:
            x = x + self.event_emb(events)
        return x

    # --- housekeeping -----------------------------------------------------------------
    def refresh(self) -> None:
        """Drop the cached table (after changing weights or buffers in place in eval mode)."""
        self._cached = None

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ItemInput:
        self._cached = None  # .to(device) / .half(): the cached table is of the old kind
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> ItemInput:
        # the cached table is valid while the module stays in eval mode (weights change in
        # training or by a state-dict load, which also drops it). ``eval()`` on an eval
        # module keeps it: ModelBundle.score calls eval() per request, and rebuilding a
        # 12k-item table each time cost ~1.3 ms of a 8.5 ms lone request (profiled)
        if mode or self.training:
            self._cached = None
        return super().train(mode)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        legacy = state_dict.pop(prefix + "weight", None)
        if legacy is not None:  # bundles written before ItemInput: one nn.Embedding
            rows = self.n_items + 1
            state_dict[prefix + "ids.weight"] = legacy[:rows]
            if self.special is not None:
                state_dict[prefix + "special.weight"] = legacy[rows:]
        if prefix + "has_id" not in state_dict:
            state_dict[prefix + "has_id"] = self.has_id
        for name in ("text", "categories"):
            incoming = state_dict.get(prefix + name)
            current = getattr(self, name, None)
            if incoming is not None and current is not None and incoming.shape != current.shape:
                setattr(self, name, torch.empty_like(incoming))
        self._cached = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TransformerParams(ItemInputParams):
    """Hyperparameters shared by the Transformer models (defaults suit Beauty-sized data)."""

    hidden_size: int = Field(64, ge=8, description="embedding and hidden width")
    num_layers: int = Field(2, ge=1, description="Transformer blocks")
    num_heads: int = Field(2, ge=1, description="attention heads (must divide hidden_size)")
    ffn_mult: int = Field(4, ge=1, description="feed-forward width as a multiple of hidden_size")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout on embeddings and residuals")
    attn_dropout: float = Field(0.2, ge=0, lt=1, description="dropout on attention weights")
    positions_from: Literal["first", "last"] = Field(
        "last",
        description="position 0 is the oldest item in the window ('first': a causal model's "
        "hidden state at step t then sees exactly what inference on that prefix sees) or the "
        "most recent one ('last')",
    )
    norm_first: bool = Field(
        True,
        description="pre-LN blocks (True) or post-LN blocks with a LayerNorm on the embeddings (False)",
    )
    layer_norm_eps: float = Field(1e-5, gt=0, description="LayerNorm epsilon")
    linear_init_std: float | None = Field(
        None,
        gt=0,
        description="normal init std for linear weights (biases zero); None = torch default",
    )

    def encoder(
        self,
        n_items: int,
        max_len: int,
        special_tokens: int = 0,
        block: Callable[..., TransformerBlock] | None = None,
    ) -> TransformerEncoder:
        """The encoder these settings describe (items ``1..n_items`` plus special tokens;
        ``block`` builds each layer, default :class:`TransformerBlock`)."""
        return TransformerEncoder(
            self.item_input(n_items, self.hidden_size, special_tokens),
            max_len,
            self.hidden_size,
            self.num_layers,
            self.num_heads,
            self.ffn_mult,
            self.dropout,
            self.attn_dropout,
            positions_from=self.positions_from,
            norm_first=self.norm_first,
            eps=self.layer_norm_eps,
            linear_init_std=self.linear_init_std,
            block=block,
        )


def attention_mask(histories: Tensor, causal: bool) -> Tensor:
    """``[B, 1, L, L]`` bool mask (True = may attend).

    Keys that are padding are hidden; every position may always attend to itself so a
    padding query has one finite key (its output is never used) and no row is all-masked.
    """
    length = histories.shape[1]
    real_key = (histories != 0)[:, None, None, :]  # [B,1,1,L]
    eye = torch.eye(length, dtype=torch.bool, device=histories.device)
    allowed = real_key | eye
    if causal:
        allowed = (
            allowed & torch.ones(length, length, dtype=torch.bool, device=histories.device).tril()
        )
    return allowed


class TransformerBlock(nn.Module):
    """Multi-head self-attention + GELU feed-forward, dropout on both residuals.

    Pre-LN (``x + f(norm(x))``) by default; post-LN (``norm(x + f(x))``, BERT/RecBole style)
    with ``norm_first=False``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_mult: int,
        dropout: float,
        attn_dropout: float,
        norm_first: bool = True,
        eps: float = 1e-5,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_mult * dim, dim),
        )
        self.drop = nn.Dropout(dropout)

    def project_qkv(self, x: Tensor) -> Tensor:
        """``[..., 3D]`` queries, keys and values of layer input ``x`` (after ``norm1`` in a
        pre-LN block)."""
        return self.qkv(self.norm1(x) if self.norm_first else x)

    def mix(self, queries: Tensor, keys: Tensor, mask: Tensor | None) -> Tensor:
        """``[B, Lq, D]`` attention of the query part of ``queries [B, Lq, 3D]`` over the
        key and value parts of ``keys [B, Lk, 3D]`` (before the output projection)."""
        b, n_queries, width = queries.shape
        dim, heads = width // 3, self.heads
        q = queries.unflatten(-1, (3, heads, dim // heads))[:, :, 0]
        _, k, v = keys.unflatten(-1, (3, heads, dim // heads)).unbind(2)
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        return attended.transpose(1, 2).reshape(b, n_queries, dim)

    def context(
        self, inputs: Tensor, mask: Tensor | None, queries: int | None = None
    ) -> Tensor | None:
        """What the block reads from its input sequence besides attention, at the last
        ``queries`` rows (all by default) of ``inputs [B, L, D]`` that ``mask`` lets each
        row read (as :meth:`mix`'s; None: the past, no padding): nothing here (None);
        BSARec's filter reads a low-pass of the past. Prefix reuse
        (:mod:`components.models.prefix`) relies on the output at a row depending on other
        rows only through :meth:`mix` and this."""
        return None

    def finish(self, x: Tensor, attended: Tensor, context: Tensor | None = None) -> Tensor:
        """The block's output at rows ``x`` (layer input) given their attention ``attended``
        (after the output projection) and :meth:`context`: residuals, LayerNorms and the
        feed-forward."""
        if self.norm_first:
            x = x + attended
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + attended)
        return self.norm2(x + self.drop(self.ffn(x)))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        qkv = self.project_qkv(x)
        attended = self.drop(self.proj(self.mix(qkv, qkv, mask)))
        return self.finish(x, attended, self.context(x, mask))


class TransformerEncoder(nn.Module):
    """Item (:class:`ItemInput`) + position embeddings, ``layers`` blocks, one LayerNorm.

    Pre-LN: the LayerNorm is applied to the output; post-LN: to the summed embeddings.
    Positions count from the oldest real item of the window (``positions_from="first"``)
    or from the most recent one (``"last"``); either way left padding never changes a score.
    """

    def __init__(
        self,
        items: ItemInput,
        max_len: int,
        dim: int,
        layers: int,
        heads: int,
        ffn_mult: int,
        dropout: float,
        attn_dropout: float,
        positions_from: str = "last",
        norm_first: bool = True,
        eps: float = 1e-5,
        linear_init_std: float | None = None,
        block: Callable[..., TransformerBlock] | None = None,
    ) -> None:
        super().__init__()
        make_block = TransformerBlock if block is None else block
        self.positions_from = positions_from
        self.norm_first = norm_first
        self.items = items
        self.positions = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            make_block(dim, heads, ffn_mult, dropout, attn_dropout, norm_first, eps)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim, eps=eps)
        nn.init.normal_(self.positions.weight, std=0.02)
        if linear_init_std is not None:
            for module in self.blocks.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=linear_init_std)
                    nn.init.zeros_(module.bias)

    def forward(
        self,
        histories: Tensor,
        causal: bool,
        table: Tensor | None = None,
        events: Tensor | None = None,
    ) -> Tensor:
        """``[B, L, D]`` hidden states; inputs longer than ``max_len`` keep the last ``max_len``.

        ``table`` is the item table of this step (computed once by the caller when it also
        scores against it); ``events`` are event-type ids aligned with ``histories``."""
        histories = histories[:, -self.positions.num_embeddings :]
        if events is not None:
            events = events[:, -self.positions.num_embeddings :]
        table = self.items.table() if table is None else table
        x = self.items(histories, table, events) + self.positions(self.position_ids(histories))
        x = self.drop(x if self.norm_first else self.norm(x))
        mask = attention_mask(histories, causal)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) if self.norm_first else x

    def position_ids(self, histories: Tensor) -> Tensor:
        """``[B, L]`` (or ``[1, L]``) position index of every column; padding gets 0."""
        length = histories.shape[1]
        steps = torch.arange(length, device=histories.device)
        if self.positions_from == "last":
            return (length - 1 - steps)[None]
        padding = (histories == 0).sum(dim=1, keepdim=True)
        return (steps[None] - padding).clamp(min=0)
