"""The recops recommendation service (BentoML 1.4 new-style API).

Built into a bento by ``components.deploy.bento.build_bento``, which passes
:class:`services.settings.ServiceSettings` as bento arguments: the bento pins one model
version (declared below as a ``BentoModel`` so the bento carries its weights).

Endpoints
    POST /recommend        {user_id?, history?, k, exclude_seen, exclude?} -> items
    POST /recommend_batch  {requests: [...]} -> {results: [...]}
    POST /feedback         {events: [{user_id, item_id, event_type, timestamp?, request_id?}]}
    POST /explain          {item_id, user_id?, history?, top} -> why (not) this item
    GET  /metadata         model version/name, data version, metrics, loaded_at
    GET  /healthz /livez   process alive (BentoML built-in)
    GET  /readyz           model loaded and feature store reachable (``__is_ready__``)
    GET  /metrics          Prometheus with bounded labels (services/metrics.py; BentoML's
                           own path-labelled metrics are off)

The request path is ours end to end and costs as little as we can make it: the two POST
routes are plain Starlette routes on the ASGI app mounted with ``bentoml.asgi_app`` (so
BentoML's middlewares - metrics, tracing, access log, timeout, max concurrency, our
guard - still wrap them), the body is validated once from bytes by pydantic, the model
call goes through :class:`services.batching.MicroBatcher` (concurrent requests merged
into one forward pass; explanations go through a second batcher of their own, on its own
thread, so a plain request never waits behind, or shares a batch with, explanation work)
and the answer is serialised with orjson straight from the
engine's plain data. BentoML's ``@bentoml.api`` machinery (IO descriptors, a response
model per request) costs about as much as the whole model call for a small model
(measured: the same echo body answered 1.6-2.2x faster from a mounted route).
Overload is shed with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import anyio.to_thread
import bentoml
import orjson
from pydantic import BaseModel, Field, ValidationError, create_model
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from components.deploy import swap
from components.monitoring.servelog import new_request_id
from components.quiet import quiet_third_party
from services import metrics
from services.batching import MicroBatcher, Overloaded
from services.guard import GuardMiddleware
from services.servinglog import ServiceLogs, feedback_event_model
from services.settings import SERVICE_NAME, ServiceSettings
from services.wire import ExplainQuery, ExplainResponse, explain_request_model, request_model

if TYPE_CHECKING:
    import torch

    from components.features.store import RecentHistory
    from services.engine import Engine, ExplainJob, Plan, Scored, ScoreQuery
    from services.explanations import QueryInfluence

quiet_third_party()  # service start: drop third-party banners from the service log
logger = logging.getLogger("recops.service")

SETTINGS = bentoml.use_arguments(ServiceSettings)
RecommendRequest = request_model(
    SETTINGS.serve.max_k,
    SETTINGS.serve.max_history,
    SETTINGS.serve.explain_max_k,
    SETTINGS.serve.max_item_id_length,
)
ExplainRequest = explain_request_model(
    SETTINGS.serve.max_history,
    SETTINGS.serve.explain_max_history,
    SETTINGS.serve.max_item_id_length,
)
BatchRequest: type[BaseModel] = create_model(
    "BatchRequest",
    __config__={"extra": "forbid"},
    requests=(
        list[RecommendRequest],  # type: ignore[valid-type]
        Field(min_length=1, max_length=SETTINGS.serve.max_batch_requests),
    ),
)
DeployedFeedbackEvent = feedback_event_model(SETTINGS.event_types)
FeedbackRequest: type[BaseModel] = create_model(
    "FeedbackRequest",
    __config__={"extra": "forbid"},
    events=(
        list[DeployedFeedbackEvent],  # type: ignore[valid-type]
        Field(min_length=1, max_length=SETTINGS.serve.log.max_feedback_events),
    ),
)
READY_CACHE_S = 5.0
JSON = "application/json"


# --- the owned HTTP routes ---------------------------------------------------------------
async def _metadata(request: Request) -> JSONResponse:
    service = bentoml.get_current_service()
    return JSONResponse(service.metadata())


async def _recommend(request: Request) -> Response:
    """``POST /recommend``: one request -> one answer."""
    try:
        parsed = RecommendRequest.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        return _error(*validation_error(exc))
    return await _answer(request, [parsed], single=True)


async def _recommend_batch(request: Request) -> Response:
    """``POST /recommend_batch``: many requests, answers in request order."""
    try:
        parsed = BatchRequest.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        return _error(*validation_error(exc))
    return await _answer(request, list(parsed.requests), single=False)  # type: ignore[attr-defined]


async def _answer(request: Request, requests: list[Any], *, single: bool) -> Response:
    service: RecommendationService = bentoml.get_current_service()
    try:
        answers = await service.recommend_many(
            requests, given_request_id(request.headers.get("x-request-id"))
        )
    except Overloaded as exc:
        return _error(
            503, f"overloaded ({exc}); retry later", {"retry-after": str(exc.retry_after_s)}
        )
    body = answers[0] if single else {"results": answers}
    return Response(orjson.dumps(body), media_type=JSON)


async def _feedback(request: Request) -> Response:
    """``POST /feedback``: validated events appended to the feedback log (one line 4xx
    for a malformed batch, which then leaves nothing behind)."""
    try:
        parsed = FeedbackRequest.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        return _error(*validation_error(exc))
    service: RecommendationService = bentoml.get_current_service()
    events = list(parsed.events)  # type: ignore[attr-defined]
    accepted = service.logs.feedback(events)
    return Response(orjson.dumps({"received": len(events), "accepted": accepted}), media_type=JSON)


def given_request_id(value: str | None) -> str | None:
    """An ``x-request-id`` header fit for the serving log (1-56 of ``[A-Za-z0-9_.-]``),
    else None (a new id is made)."""
    if (
        value
        and len(value) <= 56
        and all(c.isascii() and (c.isalnum() or c in "_.-") for c in value)
    ):
        return value
    return None


def answer_id(request_id: str | None, i: int, n: int) -> str:
    """The serving-log id of answer ``i`` of ``n``."""
    if request_id is None:
        return new_request_id()
    return request_id if n == 1 else f"{request_id}-{i}"


def validation_error(exc: ValidationError) -> tuple[int, str]:
    """(status, one line) for a body pydantic refused: 400 for unreadable JSON, else 422
    naming the first bad field."""
    errors = exc.errors(include_url=False)
    if not errors:
        return 422, "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return 400, "request body is not valid JSON"
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return 422, f"{where}: {message}{more}" if where else f"{message}{more}"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": message.splitlines()[0] if message else "error"}),
        status_code=status,
        media_type=JSON,
        headers=headers,
    )


async def _admin_swap(request: Request) -> Response:
    """``POST /admin/swap`` (components/deploy/swap.py): serve another model version in
    this process; 403 without the deployment's admin token, 409 when the service refuses
    or the new version fails its check (the current version keeps serving)."""
    if not swap.token_matches(request.headers.get(swap.TOKEN_HEADER)):
        return _error(403, "hot swap needs this deployment's admin token")
    try:
        parsed = swap.SwapRequest.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        return _error(*validation_error(exc))
    service: RecommendationService = bentoml.get_current_service()
    try:
        meta = await service.swap_model(parsed)
    except swap.SwapRefused as exc:
        return _error(409, f"hot swap refused: {exc}")
    except Exception as exc:  # a model that does not load: the old one keeps serving
        logger.exception("hot swap failed")
        return _error(409, f"hot swap failed: {type(exc).__name__}: {exc}")
    return Response(orjson.dumps(meta), media_type=JSON)


async def _metrics(request: Request) -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


routes_app = Starlette(
    routes=[
        Route("/metadata", _metadata, methods=["GET"]),
        # BentoML's metrics are off (they label series by raw path): services/metrics.py
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/recommend", _recommend, methods=["POST"]),
        Route("/recommend_batch", _recommend_batch, methods=["POST"]),
        Route("/feedback", _feedback, methods=["POST"]),
        Route(swap.SWAP_PATH, _admin_swap, methods=["POST"]),
    ]
)


@bentoml.asgi_app(routes_app, path="/")
@bentoml.service(
    name=SERVICE_NAME,
    resources={"gpu": 1},  # a request for deployment targets; CPU fallback is in __init__
    traffic={
        "timeout": SETTINGS.serve.timeout_s,
        "max_concurrency": SETTINGS.serve.max_concurrency,
    },
    workers=1,
    metrics={"enabled": False},
    logging={"access": {"enabled": SETTINGS.serve.access_log}},
    labels={"model_version": SETTINGS.model_version},
)
class RecommendationService:
    """Serves the pinned model version; popularity fallback for cold starts."""

    bento_model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        self.settings = SETTINGS
        if SETTINGS.auth_required and SETTINGS.api_key() is None:
            # fail closed: this deployment was recorded as requiring auth
            raise RuntimeError(
                f"authentication is required but no API key could be read from "
                f"${SETTINGS.serve.api_key_env} or serve.api_key_file"
            )
        self.workspace = SETTINGS.resolved_workspace()
        import torch  # here, in the worker: BentoML's parent imports this module too

        self.device = serving_device(SETTINGS.serve.device)
        if self.device.type == "cpu" and SETTINGS.serve.cpu_threads:
            torch.set_num_threads(SETTINGS.serve.cpu_threads)
        self.active = self._load(SETTINGS, Path(self.bento_model.path))
        self.requests_by_source = metrics.BY_SOURCE
        self.logs = ServiceLogs(self.workspace, SETTINGS.serve.log)
        self._swap_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._source_digest: str | None = None
        self._ready_at = 0.0
        self._ready = False
        logger.info(
            "loaded %s (%s) on %s", SETTINGS.model_version, SETTINGS.model_name, self.device
        )
        # what start-up allocated (modules, the model, the vocabulary's maps) is kept for
        # the process's life: out of the collector's way, so a full collection under load
        # walks only what requests allocate (a tail-latency cost, not a throughput one)
        gc.freeze()

    # --- the served model and its hot swap -----------------------------------------------
    def _load(self, settings: ServiceSettings, path: Path) -> Loaded:
        """The model bundle at ``path`` with its engine and micro-batcher."""
        from components.models.ann import AnnIndex
        from components.models.bundle import ModelBundle
        from services.engine import Engine
        from services.explanations import ExplainLimits

        serve = settings.serve
        bundle = ModelBundle.load(path, self.device)
        limits = ExplainLimits(
            max_history=serve.explain_max_history,
            max_k=serve.explain_max_k,
            top_events=serve.explain_top_events,
        )
        ann = AnnIndex.load(path, serve.ann_nprobe) if serve.ann != "off" else None
        engine = Engine(
            bundle,
            settings.model_version,
            self.device,
            explain=limits,
            ann=ann,
            scorer=serve.scorer,
        )
        batcher: MicroBatcher[ScoreQuery, Scored] = MicroBatcher(
            engine.score,
            max_batch_size=serve.max_batch_size,
            max_wait_s=serve.max_latency_ms / 1000.0,
            max_queue=serve.max_queue,
            on_batch=metrics.BATCH_SIZE.observe,
        )
        # explanations: their own queue and thread (never inline on the event loop), so
        # plain requests are never batched with, nor wait behind, deletion variants
        explainer: MicroBatcher[ExplainJob, QueryInfluence] = MicroBatcher(
            engine.explain,
            max_batch_size=serve.max_batch_size,
            max_wait_s=serve.max_latency_ms / 1000.0,
            max_queue=serve.max_queue,
            inline_max=0,
        )
        return Loaded(settings, engine, batcher, datetime.now(timezone.utc), explainer)

    @property
    def engine(self) -> Engine:
        return self.active.engine

    @property
    def batcher(self) -> MicroBatcher[ScoreQuery, Scored]:
        return self.active.batcher

    async def swap_model(self, request: swap.SwapRequest) -> dict[str, Any]:
        """Serve the version ``request.settings`` names from now on (see
        components/deploy/swap.py): refused unless only the model differs; the new model
        is loaded beside the current one and must answer a check before the switch, so a
        failure leaves the current version serving. Returns the new ``/metadata``."""
        new = ServiceSettings.model_validate(request.settings)
        if self._source_digest is None:
            self._source_digest = swap.source_digest(Path(__file__).resolve().parents[1])
        current = self.active.settings.model_dump(mode="json")
        reason = swap.refusal(
            current, new.model_dump(mode="json"), self._source_digest, request.source_digest
        )
        if reason is not None:
            raise swap.SwapRefused(reason)
        async with self._swap_lock:
            loaded = await anyio.to_thread.run_sync(self._load_checked, new, request.model_path)
            old, self.active = self.active, loaded
        retiring = asyncio.get_running_loop().create_task(_retire(old, new.serve.timeout_s))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)
        logger.info("hot swap: %s -> %s", old.settings.model_version, new.model_version)
        return self.metadata()

    def _load_checked(self, settings: ServiceSettings, model_path: str) -> Loaded:
        """Load the version ``settings`` names from its folder in the workspace's BentoML
        store (where the build put it, with its ANN index) and check that it recommends
        from the model for its own popular items (what the deploy's smoke test asks)."""
        path = Path(model_path).resolve()
        store = self.workspace.bentoml_home.resolve()
        if not path.is_relative_to(store) or path.name != settings.model_version:
            raise swap.SwapRefused(f"{model_path} is not {settings.model_version} in {store}")
        loaded = self._load(settings, path)
        engine = loaded.engine
        plan = engine.plan(engine.vocab.item_tokens(engine.popular(3, []).items), 5, True, [])
        if plan.query is None or not engine.score([plan.query])[0].items:
            loaded.batcher.close()
            loaded.explainer.close()
            raise swap.SwapRefused(f"{settings.model_version} did not answer from the model")
        return loaded

    # --- probes and metadata -----------------------------------------------------------
    def __is_ready__(self) -> bool:
        """Model loaded and (when features are on) the online store answers; cached 5 s."""
        now = time.monotonic()
        if now - self._ready_at > READY_CACHE_S:
            self._ready = self.engine is not None and self._feature_store_reachable()
            self._ready_at = now
        return self._ready

    def _feature_store_reachable(self) -> bool:
        if not SETTINGS.features.enabled:
            return True
        from components.features.store import is_reachable

        try:
            return bool(is_reachable(self.workspace, SETTINGS.features))
        except Exception:  # a probe never raises; the reason is in the log
            logger.exception("feature store probe failed")
            return False

    def metadata(self) -> dict[str, Any]:
        active = self.active
        engine, settings = active.engine, active.settings
        return {
            "model_version": settings.model_version,
            "model_tag": settings.model_tag,
            "model_name": settings.model_name,
            "data_version": settings.data_version,
            "metrics": settings.metrics,
            "loaded_at": active.loaded_at.isoformat(),
            "device": str(self.device),
            "n_items": engine.n_items,
            "ann": engine.ann is not None,
            "scorer": {"kind": engine.scorer.kind, "reason": engine.scorer.reason},
            "max_len": engine.max_len,
            "sample_items": engine.vocab.item_tokens(engine.popular(3, []).items),
            "auth_required": SETTINGS.auth_required,
            "access_log": SETTINGS.serve.access_log,
            "limits": {
                "max_batch_requests": SETTINGS.serve.max_batch_requests,
                "max_item_id_length": SETTINGS.serve.max_item_id_length,
                "max_body_bytes": SETTINGS.serve.max_body_bytes,
                "max_k": SETTINGS.serve.max_k,
                "max_history": SETTINGS.serve.max_history,
                "explain_max_k": SETTINGS.serve.explain_max_k,
                "explain_max_history": SETTINGS.serve.explain_max_history,
            },
        }

    # --- the request path (the routes above call it) ---------------------------------
    @bentoml.api(input_spec=ExplainRequest, route="/explain")
    async def explain(self, **fields: Any) -> ExplainResponse:
        """Why ``item_id`` scores as it does for this user/history, recommended or not:
        the events whose removal lowers (``because``) or raises (``against``) its score."""
        request = cast(ExplainQuery, ExplainRequest.model_construct(**fields))
        active = self.active  # one model for the whole request, whatever a swap does
        engine = active.engine
        target = engine.item_index(request.item_id)
        if target is None:
            raise bentoml.exceptions.NotFound(
                f"unknown item_id {request.item_id!r}: not in this model's catalogue"
            )
        (found,) = await self._histories([request])
        plan = engine.plan(
            found.items,
            1,
            False,
            [],
            from_store=found.from_store,
            explain=True,
            targets=[target],
            top=request.top,
            event_types=found.event_types,
            method=request.method,
        )
        plan = _with_store_warning(plan, found.store_failed)
        scored: Scored | None = None
        if plan.query is not None:
            from services.engine import Scored

            scored = Scored(items=[], scores=[])
            (scored.influence,) = await active.explainer.submit(
                [engine.explain_job(plan.query, scored)]
            )
        return engine.respond_explain(plan, scored, request.item_id)

    async def _histories(self, requests: list[Any]) -> list[History]:
        """Per request: its history with event types; user-id-only requests read both from
        the online store (one lookup for all of them)."""
        recent, store_failed = await self._online_histories(
            [r.user_id for r in requests if r.history is None and r.user_id is not None]
        )
        out = []
        for r in requests:
            if r.history is not None:
                out.append(History(r.history, r.event_types, False, False))
                continue
            stored = recent.get(r.user_id)
            items, kinds = (stored.items, stored.event_types) if stored else ([], None)
            out.append(History(items, kinds, True, store_failed))
        return out

    async def recommend_many(
        self, requests: list[Any], request_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Answers (JSON-ready dicts) for validated requests, in order; raises
        :class:`Overloaded` when the batcher sheds them. ``request_id`` (the proxy's
        ``x-request-id``) names the answers instead of new ids: ``<id>`` for one request,
        ``<id>-<i>`` in a batch, so a shadow's answer to the same request has the same id."""
        plans: list[Plan] = []
        active = self.active  # one model for the whole request, whatever a swap does
        engine = active.engine
        histories = await self._histories(requests)
        for r, given in zip(requests, histories, strict=True):
            plan = engine.plan(
                given.items,
                r.k,
                r.exclude_seen,
                r.exclude,
                from_store=given.from_store,
                explain=r.explain,
                event_types=given.event_types,
            )
            plans.append(_with_store_warning(plan, given.store_failed))
        queries = [p.query for p in plans if p.query is not None]
        answers = iter(await self._score(queries, active))
        scored = [next(answers) if p.query is not None else None for p in plans]
        await self._explain(plans, scored, active)
        responses = []
        rows = zip(requests, plans, histories, scored, strict=True)
        for i, (request, plan, history, found) in enumerate(rows):
            answer = engine.render(plan, found)
            answer["request_id"] = answer_id(request_id, i, len(requests))
            self.logs.served(request, plan, answer, history.items)
            responses.append(answer)
            self.requests_by_source.labels(source=plan.source).inc()
        return responses

    @bentoml.on_shutdown
    def _close(self) -> None:
        """Stop the micro-batchers (dispatcher and model thread) and flush the logs."""
        self.active.batcher.close()
        self.active.explainer.close()
        for task in self._retiring:
            task.cancel()
        self.logs.close()

    async def _online_histories(self, user_ids: list[str]) -> tuple[dict[str, RecentHistory], bool]:
        """Recent raw item ids and their event types per user from the Feast online store
        (empty when unknown), and whether the lookup failed (the users then get the
        popularity fallback)."""
        if not user_ids or not SETTINGS.features.enabled:
            return {}, False
        from components.features.store import online_recent_history

        try:
            found = await anyio.to_thread.run_sync(
                online_recent_history, self.workspace, SETTINGS.features, user_ids
            )
        except Exception:
            logger.exception("online feature lookup failed for %d users", len(user_ids))
            return {}, True
        return found, False

    async def _explain(
        self, plans: list[Plan], scored: list[Scored | None], active: Loaded
    ) -> None:
        """Attach influence to the answers whose request asked for it (``active``'s
        explanation batcher, ``max_batch_size`` jobs at a time)."""
        asked = [(p.query, s) for p, s in zip(plans, scored, strict=True) if p.explain and p.query]
        jobs = [active.engine.explain_job(query, answer) for query, answer in asked]
        size = SETTINGS.serve.max_batch_size
        found: list[QueryInfluence] = []
        for start in range(0, len(jobs), size):
            found.extend(await active.explainer.submit(jobs[start : start + size]))
        for (_, answer), influence in zip(asked, found, strict=True):
            if answer is not None:
                answer.influence = influence

    async def _score(self, queries: list[ScoreQuery], active: Loaded) -> list[Scored]:
        """Through ``active``'s micro-batcher, ``max_batch_size`` queries at a time."""
        size = SETTINGS.serve.max_batch_size
        out: list[Scored] = []
        for start in range(0, len(queries), size):
            out.extend(await active.batcher.submit(queries[start : start + size]))
        return out


class History(NamedTuple):
    """A request's history: given in the request, or read from the online store."""

    items: list[str]
    event_types: list[str] | None
    from_store: bool
    store_failed: bool


@dataclass
class Loaded:
    """One model version ready to serve: its bento arguments, engine and micro-batcher."""

    settings: ServiceSettings
    engine: Engine
    batcher: MicroBatcher[ScoreQuery, Scored]
    loaded_at: datetime
    explainer: MicroBatcher[ExplainJob, QueryInfluence]  # explanations: their own batcher


async def _retire(old: Loaded, timeout_s: float) -> None:
    """Close a swapped-out model's batcher once the requests it holds are answered."""
    await old.batcher.drain(timeout_s)
    await old.explainer.drain(timeout_s)
    old.batcher.close()
    old.explainer.close()
    # the retired model was frozen with the process's start-up state (gc.freeze in
    # __init__): unfrozen, collected once, and what remains frozen again
    del old
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def serving_device(wanted: str) -> torch.device:
    """``cuda`` when asked for (``auto``/``cuda``) and present, else CPU (logged)."""
    import torch

    if wanted != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if wanted == "cuda":
        logger.warning("serve.device=cuda but CUDA is not available: serving on CPU")
    return torch.device("cpu")


def _with_store_warning(plan: Plan, store_failed: bool) -> Plan:
    if store_failed:
        plan.warnings.append("feature store unavailable: popularity fallback")
    return plan


# every route the service declares (derived, so a new endpoint needs no list update); any
# other path is a 404 in the guard, so no request creates a new metrics series
PUBLIC_PATHS = frozenset(
    {api.route for api in RecommendationService.apis.values()}  # type: ignore[attr-defined]
    | {route.path for route in routes_app.routes if isinstance(route, Route)}
)

RecommendationService.add_asgi_middleware(  # type: ignore[attr-defined]  # asgi_app is annotated as returning the bare class
    GuardMiddleware,
    api_key=SETTINGS.api_key(),
    auth_required=SETTINGS.auth_required,
    public_paths=PUBLIC_PATHS,
    max_body_bytes=SETTINGS.serve.max_body_bytes,
)
