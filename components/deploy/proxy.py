"""A tiny TCP reverse proxy: the public port of a local deployment.

Run as its own detached process (``python -m components.deploy.proxy``). Each new
client connection is piped to the backend port named in a small JSON *target file*
(``{"host": ..., "port": ...}``), re-read when its mtime changes. A switch-over is an
atomic rewrite of that file: new connections go to the new backend at once, open ones
finish on the old backend until it is stopped after a drain period. The public port is
never closed, so clients never see a refused connection during a switch. A backend that
refuses connections (killed, being restarted by the supervisor on a fresh port) does not
fail the new connections at once: each retries for ``--connect-retry-s`` seconds,
re-reading the target file, so a restart costs only the requests that were in flight;
past that window the answer is a 503 with ``Retry-After``.

Bytes are piped unchanged (HTTP/1.1 keep-alive, any payload), so the proxy adds one
loopback hop and no parsing; the pipe is a pair of asyncio protocols writing to each
other's transport from the loop's callbacks (on uvloop when installed), the cheapest hop
Python offers.

With a challenger in the target file (``"challenger": {...}``, ``"mode": "shadow" |
"canary"``) new connections are handled request by request instead
(:mod:`components.deploy.split`): every request gets an ``x-request-id`` (kept when the
client sent one) so both answers carry the same id in the serving log; in *shadow* mode
the champion answers and a copy goes to the challenger off the request path (bounded
queue, timeout, drops counted); in *canary* mode a sticky share of users (hash of
``user_id``) is answered by the challenger, which is taken out of the path at once when
its error rate passes the configured limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

from components.deploy.split import Splitter

log = logging.getLogger("recops.proxy")
CHUNK = 64 * 1024
STATS_FILE = "split-stats.json"
#: seconds a new connection waits for a backend that refuses connections (a supervisor
#: restart takes a few seconds) before it is answered 503
CONNECT_RETRY_S = 15.0
#: first and longest pause between two connection attempts
RETRY_PAUSE_S = (0.05, 0.5)


class Target:
    """The backend address (and challenger settings) from the target file, cached by mtime."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: int | None = None
        self._address: tuple[str, int] | None = None
        self.raw: dict[str, Any] = {}

    def address(self) -> tuple[str, int] | None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if mtime != self._mtime:
            try:
                raw = json.loads(self.path.read_text())
                self._address = (str(raw["host"]), int(raw["port"]))
                self.raw = raw
                self._mtime = mtime
            except (OSError, ValueError, KeyError):
                return self._address  # half-visible write: keep the previous target
        return self._address


class _Relay(asyncio.Protocol):
    """One side of a piped connection: bytes it receives are written to its peer's
    transport straight from the event loop's callback (no stream buffer, no coroutine
    wake-up per chunk); a full peer pauses this side's reading (flow control), and either
    side's end closes the other."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Relay | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self._close_peer()
        return False  # close this side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._close_peer()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def _close_peer(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


_last_refused_note = [0.0]


def _note_refused(address: tuple[str, int], retry_s: float) -> None:
    """Log (at most once a second) that the backend refuses and connections are held."""
    now = time.monotonic()
    if now - _last_refused_note[0] >= 1.0:
        _last_refused_note[0] = now
        log.info("backend %s:%d refused a connection; holding it up to %.0fs", *address, retry_s)


class _Client(_Relay):
    """A public-port connection: piped to the live backend, or handed to the per-request
    :class:`Splitter` (stream based) while a challenger is attached."""

    def __init__(
        self,
        target: Target,
        splitter: Splitter,
        tasks: set[asyncio.Task[None]],
        retry_s: float = CONNECT_RETRY_S,
    ) -> None:
        super().__init__()
        self.target, self.splitter, self.tasks, self.retry_s = target, splitter, tasks, retry_s
        self.early: list[bytes] = []  # received before the backend connection was open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = self.target.address()
        if address is not None and self.splitter.configure(address, self.target.raw) is not None:
            reader = asyncio.StreamReader(limit=CHUNK)
            streams = asyncio.StreamReaderProtocol(reader, self.splitter.handle)
            transport.set_protocol(streams)
            streams.connection_made(transport)
            return
        super().connection_made(transport)
        if address is None:
            self._refuse(b"no backend deployed")
            return
        task = asyncio.get_running_loop().create_task(self._connect(address))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:  # the backend connection is still opening (one loopback RTT)
            self.early.append(data)
        else:
            super().data_received(data)

    async def _open_backend(self, address: tuple[str, int]) -> _Relay | None:
        """A connection to the backend; while it refuses, retried for :attr:`retry_s`
        against the target file's current address (None: gave up, or the client left)."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + self.retry_s, RETRY_PAUSE_S[0]
        while True:
            try:
                _, backend = await loop.create_connection(_Relay, *address)
                return backend
            except OSError:
                assert self.transport is not None
                if loop.time() + pause > deadline or self.transport.is_closing():
                    return None
                self.transport.pause_reading()  # the request waits in the kernel, not here
                _note_refused(address, self.retry_s)
            await asyncio.sleep(pause)
            pause = min(2 * pause, RETRY_PAUSE_S[1])
            address = self.target.address() or address

    async def _connect(self, address: tuple[str, int]) -> None:
        backend = await self._open_backend(address)
        if backend is None:
            self._refuse(b"backend unavailable")
            return
        assert self.transport is not None and backend.transport is not None
        if self.transport.is_closing():
            backend.transport.close()
            return
        self.peer, backend.peer = backend, self
        for data in self.early:
            backend.transport.write(data)
        self.early.clear()
        cast(asyncio.ReadTransport, self.transport).resume_reading()

    def _refuse(self, reason: bytes) -> None:
        """503 with ``Retry-After`` and a one-line JSON error (no backend to pipe to)."""
        assert self.transport is not None
        if self.transport.is_closing():
            return
        body = b'{"error": "%s"}\n' % reason
        self.transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"retry-after: 1\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        self.transport.close()


async def serve(host: str, port: int, target_file: Path, retry_s: float = CONNECT_RETRY_S) -> None:
    """Accept connections on ``host:port`` until SIGTERM/SIGINT."""
    target = Target(target_file)
    splitter = Splitter(target_file.with_name(STATS_FILE), lambda: (target.address(), target.raw))
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Client(target, splitter, tasks, retry_s),
        host,
        port,
        reuse_address=True,
        backlog=1024,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("proxy %s:%d -> %s (pid %d)", host, port, target_file, os.getpid())
    splitter.start()
    async with server:
        await stop.wait()
    await splitter.close()
    log.info("proxy stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description="recops local deployment proxy")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target-file", type=Path, required=True)
    parser.add_argument("--connect-retry-s", type=float, default=CONNECT_RETRY_S)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_loop(serve(args.host, args.port, args.target_file, args.connect_retry_s))


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """``main`` on uvloop when it is installed (uvicorn's, so BentoML's, event loop: a
    shorter hop per request than asyncio's own loop), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


if __name__ == "__main__":
    main()
