"""A tiny TCP reverse proxy: the public port of a local deployment.

Run as its own detached process (``python -m components.deploy.proxy``). Each new
client connection is piped to the backend port named in a small JSON *target file*
(``{"host": ..., "port": ...}``), re-read when its mtime changes. A switch-over is an
atomic rewrite of that file: new connections go to the new backend at once, open ones
finish on the old backend until it is stopped after a drain period. The public port is
never closed, so clients never see a refused connection during a switch.

Bytes are piped unchanged (HTTP/1.1 keep-alive, any payload), so the proxy adds one
loopback hop and no parsing.

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
import contextlib
import json
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from components.deploy.split import Splitter

log = logging.getLogger("recops.proxy")
CHUNK = 64 * 1024
STATS_FILE = "split-stats.json"


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


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _handle(
    target: Target,
    splitter: Splitter,
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
) -> None:
    address = target.address()
    if address is not None and splitter.configure(address, target.raw) is not None:
        await splitter.handle(client_r, client_w)
        return
    if address is None:
        client_w.write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"content-length: 33\r\nconnection: close\r\n\r\n"
            b'{"error": "no backend deployed"}\n'
        )
        await client_w.drain()
        client_w.close()
        return
    try:
        backend_r, backend_w = await asyncio.open_connection(*address)
    except OSError:
        body = b'{"error": "backend unavailable"}\n'
        client_w.write(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        await client_w.drain()
        client_w.close()
        return
    await asyncio.gather(_pipe(client_r, backend_w), _pipe(backend_r, client_w))


async def serve(host: str, port: int, target_file: Path) -> None:
    """Accept connections on ``host:port`` until SIGTERM/SIGINT."""
    target = Target(target_file)
    splitter = Splitter(target_file.with_name(STATS_FILE), lambda: (target.address(), target.raw))
    server = await asyncio.start_server(
        lambda r, w: _handle(target, splitter, r, w), host, port, reuse_address=True, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_loop(serve(args.host, args.port, args.target_file))


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
