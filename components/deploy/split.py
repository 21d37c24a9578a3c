"""Per-request routing in the proxy while a challenger is attached: shadow and canary.

The proxy (:mod:`components.deploy.proxy`) hands a connection here when its target file
names a ``challenger``. HTTP/1.1 requests are read one by one (head + ``content-length``
or chunked body, keep-alive kept), given an ``x-request-id`` when the client sent none
(the bento logs its answer under that id, so champion and challenger rows of one request
share it), and forwarded:

* ``shadow``: the champion answers; the same bytes are queued for the challenger (only
  ``/recommend`` and ``/recommend_batch``, never ``/feedback``, which would be counted
  twice). The queue is bounded and served by a few workers with a timeout, so a slow or
  dead shadow only fills the queue: further copies are dropped and counted, the live
  request never waits on it. With ``max_live`` a copy is only sent while at most that
  many live requests are open (0: the champion is idle), so the shadow's model runs in
  the champion's pauses; a copy that waited past ``timeout_s`` is dropped as stale.
* ``canary``: users whose ``user_id`` hashes below ``share`` are answered by the
  challenger (sticky: blake2b of the id, the same on every proxy); requests without a
  user are split by their request id. A challenger that cannot be reached falls back to
  the champion (counted as a challenger error); once at least ``min_requests`` challenger
  answers have an error share above ``max_error_rate`` the canary *trips*: everything
  goes to the champion at once and the stats say why (the supervisor then stops the
  challenger and records it in the registry history).

Counters per arm (requests, errors, latency percentiles) and for the mirror (queued,
dropped, timeouts, errors) are written every half second to ``split-stats.json`` beside
the target file; they reset when a new challenger (``generation``) is attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("recops.proxy")

MIRRORED_PATHS = frozenset({b"/recommend", b"/recommend_batch"})
ROUTED_PATHS = MIRRORED_PATHS
STATS_EVERY_S = 0.5
LATENCY_WINDOW = 4096
MIRROR_WORKERS = 8
Address = tuple[str, int]
#: the proxy's current target: (champion address or None, the target file's content)
TargetReader = Callable[[], tuple["Address | None", dict[str, Any]]]


class HttpError(Exception):
    """A message the splitter cannot read (the connection is closed)."""


@dataclass(frozen=True)
class SplitConfig:
    """The challenger part of the target file."""

    mode: str  # "shadow" or "canary"
    champion: Address
    challenger: Address
    champion_version: str | None
    challenger_version: str | None
    generation: str
    share: float  # canary: share of users; shadow: share of requests mirrored
    timeout_s: float
    queue: int
    max_error_rate: float
    min_requests: int
    max_live: int | None = None  # shadow: copies wait while more live requests are open

    @classmethod
    def from_target(cls, champion: Address, raw: dict[str, Any]) -> SplitConfig | None:
        """None when the target file names no challenger (plain byte piping)."""
        ch = raw.get("challenger")
        if not isinstance(ch, dict):
            return None
        try:
            return cls(
                mode=str(ch["mode"]),
                champion=champion,
                challenger=(str(ch["host"]), int(ch["port"])),
                champion_version=raw.get("version"),
                challenger_version=ch.get("version"),
                generation=str(ch.get("generation", ch["port"])),
                share=float(ch.get("share", 1.0)),
                timeout_s=float(ch.get("timeout_s", 2.0)),
                queue=int(ch.get("queue", 256)),
                max_error_rate=float(ch.get("max_error_rate", 0.05)),
                min_requests=int(ch.get("min_requests", 20)),
                max_live=None if ch.get("max_live") is None else int(ch["max_live"]),
            )
        except (KeyError, TypeError, ValueError):
            log.warning("challenger in the target file is malformed: %s", ch)
            return None


@dataclass
class ArmStats:
    """What one arm answered: requests, errors (5xx or unreachable), recent latencies."""

    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def count(self, status: int, latency_s: float) -> None:
        self.requests += 1
        self.errors += int(status >= 500 or status == 0)
        self.latencies_ms.append(latency_s * 1000.0)

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return (
                round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None
            )

        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else None,
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
        }


@dataclass
class SplitStats:
    """Counters for one challenger generation."""

    generation: str = ""
    champion: ArmStats = field(default_factory=ArmStats)
    challenger: ArmStats = field(default_factory=ArmStats)
    mirrored: int = 0
    dropped: int = 0
    mirror_timeouts: int = 0
    mirror_errors: int = 0
    mirror_stale: int = 0  # copies that waited for quiet live traffic past timeout_s
    tripped: str | None = None

    def as_dict(self, cfg: SplitConfig | None, queue_depth: int = 0) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "mode": cfg.mode if cfg else None,
            "champion_version": cfg.champion_version if cfg else None,
            "challenger_version": cfg.challenger_version if cfg else None,
            "champion": self.champion.as_dict(),
            "challenger": self.challenger.as_dict(),
            "mirrored": self.mirrored,
            "dropped": self.dropped,
            "mirror_timeouts": self.mirror_timeouts,
            "mirror_errors": self.mirror_errors,
            "mirror_stale": self.mirror_stale,
            "tripped": self.tripped,
            "queue_depth": queue_depth,  # copies waiting for the shadow now
            "pid": os.getpid(),
            "updated_at": time.time(),
        }


@dataclass
class Request:
    """One HTTP request as read from the client (``raw``: the bytes to forward)."""

    path: bytes
    headers: dict[bytes, bytes]
    body: bytes
    raw: bytes
    chunked: bool
    method: bytes = b"POST"

    @property
    def closes(self) -> bool:
        return self.headers.get(b"connection", b"").lower() == b"close"


# --- HTTP/1.1 reading (just enough to find message boundaries) ---------------------------
def _headers(head: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    found: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return lines[0], found


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body, raw (sizes, data and trailers as they came)."""
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        parts.append(line)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise HttpError("bad chunk size") from exc
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                parts.append(trailer)
            parts.append(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size + 2))


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None = None
) -> Request | None:
    """The next request on a keep-alive connection; None when the client closed it.

    ``Expect: 100-continue`` is answered here (to ``writer``) and not forwarded: a backend
    would answer it with an interim response the client no longer waits for."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise HttpError("truncated request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise HttpError("request head too large") from exc
    start, headers = _headers(head[:-4])
    parts = start.split(b" ")
    if len(parts) != 3:
        raise HttpError("bad request line")
    if b"100-continue" in headers.pop(b"expect", b"").lower():
        if writer is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        kept = [ln for ln in head[:-4].split(b"\r\n") if not ln.lower().startswith(b"expect:")]
        head = b"\r\n".join(kept) + b"\r\n\r\n"
    chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
    if chunked:
        body = await _chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get(b"content-length", b"0") or 0))
    return Request(parts[1].split(b"?", 1)[0], headers, body, head + body, chunked, parts[0])


async def read_response(
    reader: asyncio.StreamReader, head_only: bool = False
) -> tuple[int, bytes, bool]:
    """(status, raw bytes, connection closes after it) of the next final response
    (interim 1xx responses are skipped; ``head_only``: the answer to a HEAD request)."""
    status = 100
    while status < 200:
        head = await reader.readuntil(b"\r\n\r\n")
        start, headers = _headers(head[:-4])
        try:
            status = int(start.split(b" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise HttpError("bad status line") from exc
    closes = headers.get(b"connection", b"").lower() == b"close"
    if head_only:
        body = b""
    elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = await _chunked(reader)
    elif b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif status in (204, 304):
        body = b""
    else:
        body, closes = await reader.read(), True
    return status, head + body, closes


def with_request_id(request: Request) -> tuple[Request, str]:
    """The request carrying an ``x-request-id`` (the client's, else a new one)."""
    given = request.headers.get(b"x-request-id")
    if given:
        return request, given.decode("latin-1")
    rid = uuid.uuid4().hex
    head_end = len(request.raw) - len(request.body) - 2
    raw = request.raw[:head_end] + b"x-request-id: " + rid.encode() + b"\r\n\r\n" + request.body
    headers = {**request.headers, b"x-request-id": rid.encode()}
    return Request(request.path, headers, request.body, raw, request.chunked, request.method), rid


def user_bucket(key: str) -> float:
    """A stable position in [0, 1) for ``key`` (first 8 bytes of its blake2b digest)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def bucket_header(user_id: str) -> str:
    """The ``x-recops-bucket`` value (00-99) a client or gateway sends for ``user_id`` on
    the Kubernetes target: the same users fall below a canary's share as here."""
    return f"{int(user_bucket(f'user:{user_id}') * 100):02d}"


def routing_key(request: Request, request_id: str) -> str:
    """The body's ``user_id`` (a batch: its first request's), else the request id."""
    if not request.chunked and request.body:
        try:
            body = json.loads(request.body)
        except ValueError:
            return request_id
        if isinstance(body, dict):
            if isinstance(body.get("requests"), list) and body["requests"]:
                body = body["requests"][0]
            user = body.get("user_id") if isinstance(body, dict) else None
            if user is not None:
                return f"user:{user}"
    return f"request:{request_id}"


# --- the splitter --------------------------------------------------------------------------
class Splitter:
    """Routes requests while a challenger is attached; one per proxy process."""

    def __init__(self, stats_path: Path, read_target: TargetReader) -> None:
        self.stats_path = stats_path
        self.read_target = read_target
        self.cfg: SplitConfig | None = None
        self.stats = SplitStats()
        # unbounded as an object (the workers wait on this one queue for the proxy's
        # lifetime); bounded by each challenger's ``queue`` setting in _mirror
        self.queue: asyncio.Queue[tuple[str, Request, float]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty = False
        self.live = 0  # live requests waiting for their answer now
        self._quiet = asyncio.Event()  # set while live <= the shadow's max_live
        self._quiet.set()

    def configure(self, champion: Address, raw: dict[str, Any]) -> SplitConfig | None:
        """Take the target file's settings; the challenger's, None when none is attached."""
        cfg = SplitConfig.from_target(champion, raw)
        if cfg is not None and cfg.generation != self.stats.generation:
            self.stats = SplitStats(generation=cfg.generation)
            self._dirty = True
            log.info("challenger %s attached (%s)", cfg.challenger_version, cfg.mode)
        self.cfg = cfg
        return cfg

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write_stats_loop())]
        self._tasks += [asyncio.create_task(self._mirror_worker()) for _ in range(MIRROR_WORKERS)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._write_stats()

    # --- the request path ------------------------------------------------------------
    def _to_challenger(self, cfg: SplitConfig, request: Request, request_id: str) -> bool:
        if cfg.mode != "canary" or self.stats.tripped or request.path not in ROUTED_PATHS:
            return False
        return user_bucket(routing_key(request, request_id)) < cfg.share

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        """Serve one client connection request by request until either side closes."""
        conns: dict[Address, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        try:
            while True:
                try:
                    request = await read_request(client_r, client_w)
                except (HttpError, ValueError):
                    await _reply(client_w, 400, b'{"error": "malformed HTTP request"}\n')
                    return
                if request is None:
                    return
                # re-read per request: a detached or replaced challenger (or champion)
                # takes effect on kept-alive connections too
                champion, raw = self.read_target()
                if champion is None:
                    await _reply(client_w, 503, b'{"error": "no backend deployed"}\n')
                    return
                cfg = self.configure(champion, raw)
                request, request_id = with_request_id(request)
                challenger = cfg is not None and self._to_challenger(cfg, request, request_id)
                self._live_changed(cfg, +1)
                try:
                    response = await self._answer(conns, champion, cfg, request, challenger)
                finally:
                    self._live_changed(cfg, -1)
                if response is None:
                    await _reply(client_w, 502, b'{"error": "backend unavailable"}\n')
                    return
                client_w.write(response[0])
                await client_w.drain()
                if cfg is not None and cfg.mode == "shadow" and request.path in MIRRORED_PATHS:
                    self._mirror(cfg, request, request_id)
                if response[1] or request.closes:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            for _, writer in conns.values():
                writer.close()
            with contextlib.suppress(Exception):
                client_w.close()

    async def _answer(
        self,
        conns: dict[Address, tuple[asyncio.StreamReader, asyncio.StreamWriter]],
        champion: Address,
        cfg: SplitConfig | None,
        request: Request,
        challenger: bool,
    ) -> tuple[bytes, bool] | None:
        """(raw response, closes) from the chosen arm; an unreachable challenger falls
        back to the champion; None when the champion is unreachable too."""
        if challenger and cfg is not None:
            started = time.perf_counter()
            got = await _exchange(conns, cfg.challenger, request)
            self._count_challenger(cfg, got[0] if got else 0, time.perf_counter() - started)
            if got is not None:
                return got[1], got[2]
        started = time.perf_counter()
        got = await _exchange(conns, champion, request)
        if cfg is not None and request.path in ROUTED_PATHS:
            self.stats.champion.count(got[0] if got else 0, time.perf_counter() - started)
            self._dirty = True
        return (got[1], got[2]) if got is not None else None

    def _live_changed(self, cfg: SplitConfig | None, delta: int) -> None:
        self.live += delta
        limit = cfg.max_live if cfg is not None else None
        if limit is None or self.live <= limit:
            self._quiet.set()
        else:
            self._quiet.clear()

    def _count_challenger(self, cfg: SplitConfig, status: int, latency_s: float) -> None:
        arm = self.stats.challenger
        arm.count(status, latency_s)
        self._dirty = True
        if (
            cfg.mode == "canary"
            and self.stats.tripped is None
            and arm.requests >= cfg.min_requests
            and arm.errors / arm.requests > cfg.max_error_rate
        ):
            self.stats.tripped = (
                f"error rate {arm.errors}/{arm.requests} above {cfg.max_error_rate:.2%}"
            )
            log.warning("canary %s tripped: %s", cfg.challenger_version, self.stats.tripped)
            self._write_stats()

    def _mirror(self, cfg: SplitConfig, request: Request, request_id: str) -> None:
        if cfg.share < 1.0 and user_bucket(f"request:{request_id}") >= cfg.share:
            return
        if self.queue.qsize() >= cfg.queue:
            self.stats.dropped += 1
        else:
            self.queue.put_nowait((cfg.generation, request, time.monotonic()))
            self.stats.mirrored += 1
        self._dirty = True

    # --- off the request path ----------------------------------------------------------
    async def _mirror_worker(self) -> None:
        conns: dict[Address, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        while True:
            generation, request, queued_at = await self.queue.get()
            cfg = self.cfg
            if cfg is None or cfg.generation != generation:
                continue
            if not await self._wait_quiet(cfg, queued_at):
                self.stats.mirror_stale += 1
                self._dirty = True
                continue
            for address in [a for a in conns if a != cfg.challenger]:  # a new challenger
                conns.pop(address)[1].close()
            started = time.perf_counter()
            try:
                # a kept connection the shadow closed while idle is retried once, fresh
                got = await asyncio.wait_for(
                    _exchange(conns, cfg.challenger, request), cfg.timeout_s
                )
            except (TimeoutError, asyncio.TimeoutError):
                self.stats.mirror_timeouts += 1
                if cfg.challenger in conns:  # the answer may still come: not on this one
                    conns.pop(cfg.challenger)[1].close()
                self._dirty = True
                continue
            if got is None:
                self.stats.mirror_errors += 1
            self._count_challenger(cfg, got[0] if got else 0, time.perf_counter() - started)

    async def _wait_quiet(self, cfg: SplitConfig, queued_at: float) -> bool:
        """With ``max_live``: wait until at most that many live requests are open (the
        shadow then runs in the champion's pauses, never beside its work); False when the
        copy would be older than ``timeout_s`` by then (it is dropped as stale)."""
        if cfg.max_live is None or self._quiet.is_set():
            return True
        left = cfg.timeout_s - (time.monotonic() - queued_at)
        try:
            await asyncio.wait_for(self._quiet.wait(), max(0.0, left))
        except (TimeoutError, asyncio.TimeoutError):
            return False
        return True

    async def _write_stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            if self._dirty:
                self._write_stats()

    def _write_stats(self) -> None:
        self._dirty = False
        tmp = self.stats_path.with_name(f".{self.stats_path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.stats.as_dict(self.cfg, self.queue.qsize())))
            os.replace(tmp, self.stats_path)
        except OSError:
            log.exception("could not write %s", self.stats_path)


async def _exchange(
    conns: dict[Address, tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    address: Address,
    request: Request,
) -> tuple[int, bytes, bool] | None:
    """Send ``request`` to ``address`` over this client's kept-alive connection to it and
    read the answer; one retry on a fresh connection when a kept one went stale. None
    when the backend cannot be reached or answers garbage."""
    for attempt in (0, 1):
        reused = address in conns
        try:
            if not reused:
                conns[address] = await asyncio.open_connection(*address)
            reader, writer = conns[address]
            writer.write(request.raw)
            await writer.drain()
            status, response, closes = await read_response(reader, request.method == b"HEAD")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError):
            if address in conns:
                conns.pop(address)[1].close()
            if reused and attempt == 0:
                continue
            return None
        if closes:
            conns.pop(address)[1].close()
        return status, response, closes
    return None


async def _reply(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    reason = {400: b"Bad Request", 502: b"Bad Gateway", 503: b"Service Unavailable"}.get(
        status, b"Error"
    )
    writer.write(
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
