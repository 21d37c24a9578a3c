"""What the service's HTTP API reads and answers: request and response models.

Free of torch and of the model code, so BentoML's parent process (``bentoml serve``),
which imports the service module only to read its definition before it starts the
worker, does not load torch: measured, ``import torch`` is 1.7 s of CPU, about a third of
a process start (see services/recommender.py). The worker imports the engine when it
loads the model.
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Method = Literal["deletion", "group", "search"]


Source = Literal["model", "cold_start"]


# --- wire models ------------------------------------------------------------------------
def request_model(
    max_k: int, max_history: int, explain_max_k: int = 20, max_id_length: int = 256
) -> type[BaseModel]:
    """The ``/recommend`` body schema with this deployment's limits baked in.

    Strict types (``"k": "7"`` and ``"k": true`` are 422s, not coerced) and a bound on
    every dimension: list lengths and the length of each id, so no request can make the
    service hold or echo (in ``warnings``) more than a few hundred kilobytes.
    """
    ItemId = Annotated[str, StringConstraints(min_length=1, max_length=max_id_length)]

    class RecommendRequest(BaseModel):
        """One recommendation request. Give ``user_id`` (history from the online store),
        ``history`` (raw item ids, oldest first), or both (``history`` wins)."""

        model_config = ConfigDict(extra="forbid", strict=True)

        user_id: str | None = Field(None, min_length=1, max_length=max_id_length)
        history: list[ItemId] | None = Field(None, max_length=max_history)
        k: int = Field(10, ge=1, le=max_k)
        exclude_seen: bool = True
        exclude: list[ItemId] = Field(default_factory=list, max_length=max_history)
        explain: bool = False
        event_types: list[ItemId] | None = Field(None, max_length=max_history)

        @model_validator(mode="after")
        def _needs_user_or_history(self) -> RecommendRequest:
            if self.user_id is None and self.history is None:
                raise ValueError("give user_id or history")
            if self.explain and self.k > explain_max_k:
                raise ValueError(f"explanations are limited to k <= {explain_max_k}")
            _check_event_types(self.history, self.event_types)
            return self

    return RecommendRequest


class ExplainQuery(Protocol):
    """What the service reads from a validated ``/explain`` body."""

    item_id: str
    user_id: str | None
    history: list[str] | None
    event_types: list[str] | None
    top: int
    method: Method


def explain_request_model(
    max_history: int, max_top: int, max_id_length: int = 256
) -> type[BaseModel]:
    """The ``/explain`` body schema: why does (or doesn't) this history lead to ``item_id``.
    Strict and bounded like :func:`request_model`."""
    ItemId = Annotated[str, StringConstraints(min_length=1, max_length=max_id_length)]

    class ExplainRequest(BaseModel):
        """Explain one item for one user id and/or explicit history (``history`` wins)."""

        model_config = ConfigDict(extra="forbid", strict=True)

        item_id: str = Field(min_length=1, max_length=max_id_length)
        user_id: str | None = Field(None, min_length=1, max_length=max_id_length)
        history: list[ItemId] | None = Field(None, max_length=max_history)
        event_types: list[ItemId] | None = Field(None, max_length=max_history)
        top: int = Field(5, ge=1, le=max_top)
        method: Method = Field(
            "group",
            description="group: the events whose removal together lowers the item most "
            "(greedy group deletion); search: the most damaging 3 events found by trying every "
            "3-set of the likely candidates (the recent three among them; about 300 histories "
            "re-scored); deletion: each event removed alone (cheapest)",
        )

        @model_validator(mode="after")
        def _needs_user_or_history(self) -> ExplainRequest:
            if self.user_id is None and self.history is None:
                raise ValueError("give user_id or history")
            _check_event_types(self.history, self.event_types)
            return self

    return ExplainRequest


def _check_event_types(history: list[str] | None, event_types: list[str] | None) -> None:
    if event_types is not None and (history is None or len(event_types) != len(history)):
        raise ValueError("event_types needs a history of the same length")


# --- explanations, as answered ---------------------------------------------------------
class Because(BaseModel):
    """A history event and how much it drove an item."""

    item_id: str
    position: int = Field(description="index in the history as given (0 = oldest)")
    events_ago: int = Field(description="1 = the most recent event")
    event_type: str | None
    influence: float = Field(description="score drop of the item if this event is removed")
    rank_change: int = Field(description="places the item falls if this event is removed")


class Explanation(BaseModel):
    """How the explanation was made (and why there is none, when there is none)."""

    explainable: bool
    method: str = "deletion"  # components.explain.influence.METHOD (torch-bound)
    events_explained: int = 0
    note: str | None = None


# --- answers ------------------------------------------------------------------------------
class RecommendedItem(BaseModel):
    item_id: str
    score: float
    because: list[Because] | None = None


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    model_version: str
    source: Source
    warnings: list[str] = []
    request_id: str | None = None  # names this answer in the serving log (for feedback)
    explanation: Explanation | None = None


class ExplainResponse(BaseModel):
    """Why ``item_id`` scores as it does for this history (recommended or not)."""

    item_id: str
    score: float | None
    rank: int | None = Field(None, description="1 = the model's top item (history included)")
    because: list[Because]
    against: list[Because]
    explanation: Explanation
    model_version: str
    source: Source
    warnings: list[str] = []
