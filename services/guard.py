"""ASGI middleware in front of the recommendation service.

Three jobs, all at the edge so the service methods stay about recommending:

* **API key** (optional): when a key is configured every path except the probes
  (``/healthz``, ``/livez``, ``/readyz``) needs ``X-API-Key: <key>`` or
  ``Authorization: Bearer <key>``; otherwise 401 with a one-line JSON error.
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
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBE_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
INTERNAL_HEADER = "x-recops-internal"
INTERNAL_TOKEN = secrets.token_urlsafe(24)  # one per server process


class GuardMiddleware:
    """API key check, internal-route guard and 4xx body normalisation (see module doc)."""

    def __init__(
        self, app: ASGIApp, api_key: str | None = None, internal_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.internal_paths = internal_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = _headers(scope)
        if path in self.internal_paths:
            if not hmac.compare_digest(headers.get(INTERNAL_HEADER, ""), INTERNAL_TOKEN):
                await _send_error(send, 404, "not found")
                return
            await self.app(scope, receive, send)
            return
        if self.api_key and path not in PROBE_PATHS and not self._authorized(headers):
            await _send_error(
                send,
                401,
                "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                {"www-authenticate": "Bearer"},
            )
            return
        if path in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "POST":
            scope = _as_json(scope)
        await self.app(scope, receive, _OneLineErrors(send))

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
