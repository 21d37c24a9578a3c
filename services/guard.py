"""ASGI middleware in front of the recommendation service.

Its jobs, all at the edge so the service methods stay about recommending:

* **API key**: when a key is configured every path except the probes
  (``/healthz``, ``/livez``, ``/readyz``) needs ``X-API-Key: <key>`` or
  ``Authorization: Bearer <key>``; otherwise 401 with a one-line JSON error. When the
  deployment *requires* auth (recorded at deploy time) and no key could be read, every
  such path answers 503: it fails closed, never open.
* **Known paths only**: a path that is not one of the service's declared routes gets a
  404 here. This middleware sits outside BentoML's Prometheus middleware (which labels
  series by raw path), and 401s, 404s and 413s are answered here too, so no request an
  outsider can make creates a new metrics series.
* **Metrics**: every answer (its own rejections included) is counted in
  ``services.metrics`` under its declared route or ``"other"``.
* **Body size**: a body over ``max_body_bytes`` (by ``content-length`` or as it streams
  in) is a 413 before any of it is parsed.
* **Internal routes**: the batchable scoring endpoint is called in-process through its
  batch dispatcher (``services/batching.py``); its HTTP route needs a per-process random
  token nobody outside holds, so outside callers get 404 (it takes vocabulary indices,
  not a public contract).
* **One-line client errors**: BentoML answers bad input with a 400 carrying pydantic's
  error list; we rewrite every 4xx JSON body to ``{"error": "<field>: <message>"}`` and
  use 400 for unreadable JSON, 422 for well-formed JSON that breaks the schema.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from services.metrics import LATENCY, REQUESTS, endpoint_label

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBE_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
INTERNAL_HEADER = "x-recops-internal"
INTERNAL_TOKEN = secrets.token_urlsafe(24)  # one per server process


DEFAULT_MAX_BODY_BYTES = 1_000_000


class GuardMiddleware:
    """API key check, known-path and body-size limits, internal-route guard and 4xx body
    normalisation (see module doc). ``public_paths`` empty means every path is known."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None = None,
        internal_paths: frozenset[str] = frozenset(),
        *,
        auth_required: bool = False,
        public_paths: frozenset[str] = frozenset(),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.auth_required = auth_required
        self.internal_paths = internal_paths
        self.known_paths = public_paths | internal_paths | PROBE_PATHS if public_paths else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = _headers(scope)
        send = _measured(send, endpoint_label(path, self.known_paths))
        if self.known_paths is not None and path not in self.known_paths:
            await _send_error(send, 404, "not found")
            return
        if self.auth_required and self.api_key is None and path not in PROBE_PATHS:
            await _send_error(send, 503, "authentication is required but no API key is configured")
            return
        if path in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if path in self.internal_paths:
            if not hmac.compare_digest(headers.get(INTERNAL_HEADER, ""), INTERNAL_TOKEN):
                await _send_error(send, 404, "not found")
                return
            await self.app(scope, receive, send)
            return
        if self.api_key and not self._authorized(headers):
            await _send_error(
                send,
                401,
                "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                {"www-authenticate": "Bearer"},
            )
            return
        if scope.get("method") == "POST":
            body = await self._bounded_body(headers, receive)
            if body is None:
                await _send_error(send, 413, f"request body over {self.max_body_bytes} bytes")
                return
            scope, receive = _as_json(scope), _replay(body, receive)
        await self.app(scope, receive, _OneLineErrors(send))

    async def _bounded_body(self, headers: dict[str, str], receive: Receive) -> bytes | None:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        return await _read_body(receive, self.max_body_bytes)

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.api_key is not None
        given = headers.get("x-api-key")
        if given is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(given.encode(), self.api_key.encode())


class _OneLineErrors:
    """A ``send`` wrapper that buffers 4xx JSON responses and rewrites their body."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])
            if 400 <= status < 500 and _is_json(message):
                self.start = message
                return
            await self.send(message)
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.body.extend(message.get("body", b""))
        if message.get("more_body", False):
            return
        status, text = one_line_error(int(self.start["status"]), bytes(self.body))
        payload = json.dumps({"error": text}).encode()
        headers = [
            (k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"
        ]
        headers.append((b"content-length", str(len(payload)).encode()))
        await self.send({**self.start, "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": payload, "more_body": False})


def one_line_error(status: int, body: bytes) -> tuple[int, str]:
    """(status, message) for a 4xx body from BentoML or Starlette (see module doc)."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return status, body.decode(errors="replace").strip().splitlines()[
            0
        ] if body else "bad request"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # BentoML wraps some error bodies in a one-element list
    if not isinstance(data, dict):
        return status, str(data)
    details = data.get("detail")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        first = details[0]
        if first.get("type") == "json_invalid":
            return 400, "request body is not valid JSON"
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",))
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        more = f" (+{len(details) - 1} more)" if len(details) > 1 else ""
        return 422, f"{where}: {message}{more}" if where else f"{message}{more}"
    text = str(data.get("error") or data.get("detail") or "bad request")
    return status, text.splitlines()[0]


def _measured(send: Send, endpoint: str) -> Send:
    """A ``send`` that counts the answer and its duration under ``endpoint``."""
    started = time.perf_counter()
    status = 0

    async def measured(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            REQUESTS.labels(endpoint=endpoint, code=str(status)).inc()
            LATENCY.labels(endpoint=endpoint).observe(time.perf_counter() - started)
        await send(message)

    return measured


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it grows past ``limit`` bytes (or the client
    disconnects): a bounded read, so a huge body costs at most ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app, then defers to the
    original (which reports the disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _as_json(scope: Scope) -> Scope:
    """The API speaks JSON only: read bodies as JSON whatever ``content-type`` says
    (``curl -d`` sends form encoding), so a bad body is a JSON error, not a form one."""
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
    headers.append((b"content-type", b"application/json"))
    return {**scope, "headers": headers}


def _is_json(start: Message) -> bool:
    for key, value in start.get("headers", []):
        if key.lower() == b"content-type":
            return b"json" in value.lower()
    return False


async def _send_error(
    send: Send, status: int, message: str, extra: dict[str, str] | None = None
) -> None:
    payload = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
