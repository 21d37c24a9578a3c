"""Request -> model call -> response, without HTTP.

The service, the in-process benchmark and the unit tests share this code, so what the
bento answers is what they measure. Three steps:

1. :meth:`Engine.plan` turns one validated request (raw item ids) into a
   :class:`ScoreQuery` over vocabulary indices, or into a cold start when no known item
   is left; unknown ids are dropped and named in ``warnings``.
2. :meth:`Engine.score` runs many queries as one padded ``[B, max_len]`` batch through
   ``bundle.recommend`` (the service routes it through its micro-batcher). Explanations
   are a separate batched call, :meth:`Engine.explain`, over :class:`ExplainJob` s built
   from the scored answers (the service gives it a batcher of its own): a plain batch
   never carries explanation work, and explaining never changes what was recommended.
3. :meth:`Engine.render` (plain data, the service's hot path) or :meth:`Engine.respond`
   (a validated model) renders either result as the public response.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from components.data.sequences import PAD
from components.explain.compiled import DeletionEncoder
from components.models.ann import AnnIndex, ann_recommend
from components.models.compiled import ScorerKind, serving_scorer
from services.explanations import (
    GROUP_NOTE,
    ExplainLimits,
    ItemInfluence,
    QueryInfluence,
    because_rows,
    explain_queries,
    render_because,
)
from services.wire import (
    Because,
    ExplainResponse,
    Explanation,
    Method,
    RecommendResponse,
    Source,
)

logger = logging.getLogger(__name__)


class ScoreQuery(BaseModel):
    """What the batched model call needs: known item indices, oldest first."""

    history: list[int]
    k: int
    exclude: list[int] = []
    #: event-type indices aligned with ``history`` (only for models that read them)
    events: list[int] | None = None
    explain: bool = False
    targets: list[int] | None = None  # items to explain (default: the recommended ones)
    top: int | None = None  # events listed per explained item (default: the deployment's)
    method: Method = "deletion"


class ExplainJob(BaseModel):
    """One query's explanation work: ``targets`` (item indices) given ``history``."""

    history: list[int]
    targets: list[int]
    top: int  # events listed per item
    method: Method = "deletion"
    events: list[int] | None = None  # event-type indices aligned with history (model reads them)
    against: bool = True  # the events that hold each item back are shown (/explain)


class Scored(BaseModel):
    """Top-k item indices and their scores, best first."""

    items: list[int]
    scores: list[float]
    influence: QueryInfluence | None = None


@dataclass
class Plan:
    """How one request will be answered."""

    query: ScoreQuery | None  # None -> popularity fallback
    k: int
    exclude: list[int]
    warnings: list[str] = field(default_factory=list)
    n_unknown: int = 0  # history items not in the model's vocabulary (the serving log)
    explain: bool = False
    #: for explanations: the query history's tokens, their positions in the history as
    #: given, its length and its event types (None when the request had none)
    history_tokens: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    given_length: int = 0
    event_types: list[str] | None = None

    @property
    def source(self) -> Source:
        return "model" if self.query is not None else "cold_start"


# --- the engine -------------------------------------------------------------------------
class Engine:
    """A loaded bundle plus the per-deployment constants the request path needs."""

    def __init__(
        self,
        bundle: Any,
        version: str,
        device: torch.device,
        explain: ExplainLimits | None = None,
        ann: AnnIndex | None = None,
        scorer: ScorerKind = "onnx",
    ) -> None:
        self.bundle = bundle
        self.ann = ann  # approximate top-k (components/models/ann.py) when set
        bundle.model.eval()  # serving only: the explanation path calls the model directly
        # the model call of a plain request (components/models/compiled.py); explanations
        # and the ANN path call the model itself
        self.scorer = serving_scorer(
            bundle.model, scorer, bundle.uses_events, device, stored=bundle.source
        )
        self.explain_limits = explain or ExplainLimits()
        # the deletion encodings of explanations through ONNX Runtime: the graph stored at
        # registration (else exported), opened and checked at the first explanation
        # (components/explain/compiled.py), so never on start-up
        self.deletions = DeletionEncoder(bundle.model, bundle.uses_events, bundle.source)
        self.vocab = bundle.vocab
        self.version = version
        self.device = device
        self.max_len = int(bundle.max_len)
        self.n_items = int(self.vocab.n_items)
        popularity = np.asarray(bundle.item_popularity, dtype=np.float64).copy()
        popularity[PAD] = -np.inf
        # most popular first; ties by index so answers are deterministic
        self._popular_order = np.lexsort((np.arange(len(popularity)), -popularity))
        self._popular_order = self._popular_order[self._popular_order != PAD]
        self._popularity = popularity
        # token -> index and back as plain Python containers: a dict lookup per id is
        # ~50x cheaper than building a pandas Index per request (profiled)
        self._index: dict[str, int] = {t: i + 1 for i, t in enumerate(self.vocab.items)}
        self._tokens: list[str] = ["", *self.vocab.items]
        # items the model can represent (id, text or category); a content model also
        # knows catalogue items that had no training events (cold items)
        self._known = bundle.known_items()
        self._all_known = bool(self._known[1:].all())
        # event type -> index, for models trained with an event-type input
        self._event_index: dict[str, int] | None = None
        if getattr(bundle, "uses_events", False):
            self._event_index = {t: i + 1 for i, t in enumerate(self.vocab.event_types)}

    # 1. plan --------------------------------------------------------------------------
    def plan(
        self,
        history: list[str] | None,
        k: int,
        exclude_seen: bool,
        exclude: list[str],
        *,
        from_store: bool = False,
        explain: bool = False,
        targets: list[int] | None = None,
        top: int | None = None,
        event_types: list[str] | None = None,
        method: Method = "deletion",
    ) -> Plan:
        """Map raw ids to indices; unknown ids are dropped and reported. With ``explain``
        the batched call also explains ``targets`` (default: the recommended items)."""
        tokens = history or []
        lookup = self._index.get
        indices = np.fromiter((lookup(t, PAD) for t in tokens), dtype=np.int64, count=len(tokens))
        warnings: list[str] = []
        unknown = [t for t, i in zip(tokens, indices, strict=True) if i == PAD]
        where = "online history" if from_store else "history"
        if unknown:
            warnings.append(f"unknown item ids dropped from {where}: {_short_list(unknown)}")
        blank = [] if self._all_known else _unrepresented(tokens, indices, self._known)
        if blank:
            warnings.append(
                f"item ids without training events or text dropped from {where}: "
                f"{_short_list(blank)}"
            )
            indices = np.where(self._known[indices], indices, PAD)
        known = indices[indices != PAD].tolist()
        excluded = [i for i in (lookup(t, PAD) for t in exclude) if i != PAD]
        if exclude_seen:
            excluded = sorted(set(excluded) | set(known))
        k = min(k, self.n_items)
        if not known:
            return Plan(
                None,
                k,
                excluded,
                warnings,
                explain=explain,
                given_length=len(tokens),
                n_unknown=len(unknown),
            )
        positions = np.flatnonzero(indices != PAD)[-self.max_len :].tolist()
        query = ScoreQuery(
            history=known[-self.max_len :],
            k=k,
            exclude=excluded,
            explain=explain,
            targets=targets,
            top=top,
            events=self._event_indices(event_types, positions, warnings),
            method=method,
        )
        return Plan(
            query,
            k,
            excluded,
            warnings,
            explain=explain,
            history_tokens=[tokens[p] for p in positions],
            positions=positions,
            given_length=len(tokens),
            n_unknown=len(unknown),
            event_types=event_types,
        )

    def _event_indices(
        self, event_types: list[str] | None, positions: list[int], warnings: list[str]
    ) -> list[int] | None:
        """Event-type indices of the kept history positions, for a model that reads them
        (None otherwise, or when the request gave none); unknown types get no embedding
        (index 0) and a warning."""
        if self._event_index is None or event_types is None:
            return None
        lookup = self._event_index.get
        kinds = [lookup(event_types[p], PAD) for p in positions]
        unknown = sorted({event_types[p] for p, k in zip(positions, kinds, strict=True) if not k})
        if unknown:
            warnings.append(f"unknown event types read as none: {_short_list(unknown)}")
        return kinds

    def item_index(self, item_id: str) -> int | None:
        """The vocabulary index of one raw item id (None when unknown)."""
        return self._index.get(item_id)

    # 2. score -------------------------------------------------------------------------
    def score(self, queries: list[ScoreQuery]) -> list[Scored]:
        """One forward pass for all queries; each gets its own ``k`` and exclusions."""
        if not queries:
            return []
        # padded to the longest history, not to max_len: columns that are padding in
        # every row cost the model work and change nothing (evaluation trims them too),
        # so a 3-item history is 3 positions (what trim_left_padding would leave)
        width = max(len(q.history) for q in queries)
        histories = _left_padded([q.history for q in queries], width)
        excluded = _right_padded([q.exclude or [PAD] for q in queries])
        top = min(max(q.k for q in queries), self.n_items)
        events = None
        if self.bundle.uses_events and any(q.events is not None for q in queries):
            rows = [q.events if q.events is not None else [PAD] * len(q.history) for q in queries]
            events = _left_padded(rows, width)
        if self.ann is not None:
            indices, scores = self._ann_top_k(histories, excluded, top, events)
        else:  # scores and top-k in one compiled call (components/models/compiled.py)
            indices, scores = self.scorer.top_k(histories, excluded, top, events)
        out: list[Scored] = []
        for row, query in enumerate(queries):
            keep = np.isfinite(scores[row, : query.k]) & (indices[row, : query.k] != PAD)
            out.append(
                Scored.model_construct(  # plain ints and floats from numpy: nothing to check
                    items=indices[row, : query.k][keep].tolist(),
                    scores=scores[row, : query.k][keep].tolist(),
                    influence=None,
                )
            )
        return out

    @torch.inference_mode()
    def _ann_top_k(
        self, histories: torch.Tensor, excluded: torch.Tensor, k: int, events: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.ann is not None
        device = self.device
        found = ann_recommend(
            self.bundle.model,
            self.ann,
            histories.to(device),
            k,
            excluded.to(device),
            events.to(device) if events is not None else None,
        )
        return found[0].cpu().numpy(), found[1].float().cpu().numpy()

    def explain_job(self, query: ScoreQuery, scored: Scored | None) -> ExplainJob:
        """What explaining ``query`` takes: its ``targets`` (default: the recommended items,
        at most ``explain_max_k``) and the events listed per item."""
        limits = self.explain_limits
        targets = query.targets if query.targets is not None else (scored.items if scored else [])
        return ExplainJob(
            history=query.history,
            targets=targets[: limits.max_k],
            top=query.top or limits.top_events,
            method=query.method,
            events=query.events,
            # /explain names its item and shows the events against it too; /recommend
            # shows what raised each recommended item only
            against=query.targets is not None,
        )

    @torch.inference_mode()
    def explain(self, jobs: list[ExplainJob]) -> list[QueryInfluence]:
        """Deletion influence for every job: all their history variants in one batched
        forward pass (apart from, and after, the recommendations they explain)."""
        if not jobs:
            return []
        return explain_queries(
            self.bundle.model,
            [j.history for j in jobs],
            [j.targets for j in jobs],
            [j.top for j in jobs],
            self.max_len,
            self.explain_limits,
            [j.method for j in jobs],
            [j.events for j in jobs],
            [j.against for j in jobs],
            self.deletions,
        )

    def popular(self, k: int, exclude: list[int]) -> Scored:
        """The ``k`` most popular items outside ``exclude`` (the cold-start answer)."""
        candidates = self._popular_order[: k + len(exclude)]
        if exclude:
            candidates = candidates[~np.isin(candidates, np.asarray(exclude))]
        chosen = candidates[:k]
        return Scored(items=chosen.tolist(), scores=self._popularity[chosen].tolist())

    # 3. respond -----------------------------------------------------------------------
    def render(self, plan: Plan, scored: Scored | None) -> dict[str, Any]:
        """The public answer as JSON-ready data, the shape of :class:`RecommendResponse`
        (what :meth:`respond` dumps, without its ``request_id``, which the service sets).
        The service serialises this directly: no response model is built per request (the
        hot path, explained or not)."""
        if scored is None:
            scored = self.popular(plan.k, plan.exclude)
        tokens = self._tokens
        because = self._because_rows(plan, scored) if plan.explain else None
        items = [
            {
                "item_id": tokens[i],
                "score": _finite(s),
                "because": None if because is None else because.get(i, []),
            }
            for i, s in zip(scored.items, scored.scores, strict=True)
        ]
        explanation = None
        if plan.explain:
            explanation = self._explanation(plan, scored.influence).model_dump(mode="json")
        return {
            "items": items,
            "model_version": self.version,
            "source": plan.source,
            "warnings": plan.warnings,
            "explanation": explanation,
        }

    def _because_rows(self, plan: Plan, scored: Scored) -> dict[int, list[dict[str, Any]]]:
        """Each explained item's ``because`` as JSON-ready rows, by item index."""
        if scored.influence is None:
            return {}
        return {
            item.item: because_rows(
                item.support,
                plan.history_tokens,
                plan.positions,
                plan.given_length,
                plan.event_types,
            )
            for item in scored.influence.items
        }

    def respond(self, plan: Plan, scored: Scored | None) -> RecommendResponse:
        """The public answer for a planned request (``scored`` is None for cold starts) as
        the validated response model: :meth:`render`'s data, so the in-process path
        (benchmarks, tests) and the service give one answer."""
        return RecommendResponse.model_validate(self.render(plan, scored))

    def respond_explain(self, plan: Plan, scored: Scored | None, item_id: str) -> ExplainResponse:
        """The public ``/explain`` answer for a planned request with one target."""
        influence = scored.influence if scored is not None else None
        found: ItemInfluence | None = influence.items[0] if influence and influence.items else None
        return ExplainResponse(
            item_id=item_id,
            score=_finite(found.score) if found else None,
            rank=found.rank if found else None,
            because=self._because(plan, found.support) if found else [],
            against=self._because(plan, found.against) if found else [],
            explanation=self._explanation(plan, influence),
            model_version=self.version,
            source=plan.source,
            warnings=plan.warnings,
        )

    def _because(self, plan: Plan, events: list[Any]) -> list[Because]:
        return render_because(
            events, plan.history_tokens, plan.positions, plan.given_length, plan.event_types
        )

    def _explanation(self, plan: Plan, influence: QueryInfluence | None) -> Explanation:
        if plan.query is None or influence is None:
            return Explanation(explainable=False, note="no known history: popular items")
        if not influence.explainable:
            flat = f"{self.bundle.model_name} scores do not depend on the history"
            return Explanation(explainable=False, note=flat)
        notes = [GROUP_NOTE] if influence.method in ("group", "search") else []
        if influence.events_explained < len(plan.query.history):
            notes.append(f"only the {influence.events_explained} most recent events were explained")
        return Explanation(
            explainable=True,
            method=influence.method,
            events_explained=influence.events_explained,
            note="; ".join(notes) or None,
        )

    def explain_plans(self, plans: list[Plan], scored: list[Scored | None]) -> None:
        """In-process: attach the influence to each scored answer whose plan asked for it."""
        asked = [(p.query, s) for p, s in zip(plans, scored, strict=True) if p.explain and p.query]
        jobs = [self.explain_job(query, answer) for query, answer in asked]
        for (_, answer), found in zip(asked, self.explain(jobs), strict=True):
            if answer is not None:
                answer.influence = found

    def recommend_local(self, plans: list[Plan]) -> list[RecommendResponse]:
        """All steps in-process (benchmarks, tests): no HTTP, no adaptive batching."""
        queries = [p.query for p in plans if p.query is not None]
        answers = iter(self.score(queries))
        scored = [next(answers) if p.query is not None else None for p in plans]
        self.explain_plans(plans, scored)
        return [self.respond(p, s) for p, s in zip(plans, scored, strict=True)]

    def explain_local(self, plan: Plan, item_id: str) -> ExplainResponse:
        """``/explain`` in-process: ``plan`` names its one target; nothing is recommended."""
        scored: Scored | None = None
        if plan.query is not None:
            scored = Scored(items=[], scores=[])
            (scored.influence,) = self.explain([self.explain_job(plan.query, scored)])
        return self.respond_explain(plan, scored, item_id)


def _left_padded(rows: list[list[int]], width: int) -> torch.Tensor:
    """``[len(rows), width]`` with each row's last ``width`` values at its right end."""
    out = np.full((len(rows), width), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        if r:
            tail = r[-width:]
            out[i, width - len(tail) :] = tail
    return torch.from_numpy(out)


def _right_padded(rows: list[list[int]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def _unrepresented(tokens: list[str], indices: np.ndarray, known: np.ndarray) -> list[str]:
    """Tokens in the vocabulary that the model cannot represent (no id, text or category)."""
    missing = (indices != PAD) & ~known[indices]
    return [tokens[i] for i in np.flatnonzero(missing)]


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _short_list(tokens: list[str], limit: int = 10) -> str:
    shown = ", ".join(tokens[:limit])
    return shown + (f" (+{len(tokens) - limit} more)" if len(tokens) > limit else "")
