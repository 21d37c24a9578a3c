"""The proxy's per-request splitting, fast: the real proxy process in front of two small
asyncio HTTP backends (no model), driven by a real HTTP client."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from components.deploy.proxy import STATS_FILE
from components.deploy.split import read_request
from components.net import free_port
from tests.conftest import REPO_ROOT


class Backend:
    """Answers every request with who it is and the request id it was given."""

    def __init__(self, name: str, delay_s: float = 0.0) -> None:
        self.name, self.delay_s, self.seen = name, delay_s, []  # type: ignore[var-annotated]
        self.port = free_port()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            rid = request.headers.get(b"x-request-id", b"").decode()
            self.seen.append(rid)
            await asyncio.sleep(self.delay_s)
            body = json.dumps({"who": self.name, "request_id": rid}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        writer.close()

    async def serve(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        async with server:
            await server.serve_forever()


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend, Backend, Backend]]:
    trio = (
        Backend("champion"),
        Backend("challenger"),
        Backend("slow", delay_s=5.0),
        Backend("busy", delay_s=1.0),
    )
    loop = asyncio.new_event_loop()
    for b in trio:
        loop.create_task(b.serve())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield trio

    async def shutdown() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with started_proxy(tmp_path, retry_s=1.0) as found:
        yield found


@contextmanager
def started_proxy(tmp_path: Path, retry_s: float) -> Iterator[tuple[str, Path]]:
    """The real proxy process on a free port, its target file not written yet."""
    port = free_port()
    target = tmp_path / "backend.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "components.deploy.proxy", "--port", str(port)]
        + ["--target-file", str(target), "--connect-retry-s", str(retry_s)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "proxy.log").open("w"),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}", target
    finally:
        proc.terminate()
        proc.wait(10)


def point(target: Path, champion: Backend, challenger: Backend | None, **settings: object) -> None:
    doc: dict = {"host": "127.0.0.1", "port": champion.port, "version": "v1"}
    if challenger is not None:
        doc["challenger"] = {
            "host": "127.0.0.1",
            "port": challenger.port,
            "version": "v2",
            "generation": f"g{time.monotonic_ns()}",
            **settings,
        }
    target.write_text(json.dumps(doc))


def stats(target: Path) -> dict:
    try:
        return json.loads((target.parent / STATS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def wait_stats(target: Path, check) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if check(found := stats(target)):
            return found
        time.sleep(0.1)
    raise AssertionError(f"split stats never matched: {stats(target)}")


def test_shadow_mirrors_with_the_same_request_id_and_a_slow_or_dead_shadow_costs_nothing(
    backends: tuple[Backend, Backend, Backend, Backend], proxy: tuple[str, Path]
) -> None:
    champion, challenger, slow, _ = backends
    url, target = proxy
    point(target, champion, challenger, mode="shadow")
    with httpx.Client(base_url=url, timeout=5) as client:
        answers = [client.post("/recommend", json={"user_id": f"u{i}"}).json() for i in range(20)]
        given = client.post("/recommend", json={}, headers={"x-request-id": "mine"}).json()
        client.post("/feedback", json={"events": []})  # never mirrored
    assert {a["who"] for a in answers} == {"champion"} and given["request_id"] == "mine"
    wait_stats(target, lambda s: s.get("challenger", {}).get("requests") == 21)
    assert sorted(challenger.seen) == sorted([a["request_id"] for a in answers] + ["mine"])

    point(target, champion, slow, mode="shadow", timeout_s=0.2, queue=2)
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=5) as client:
        for i in range(20):
            assert client.post("/recommend", json={"user_id": f"u{i}"}).json()["who"] == "champion"
    assert time.perf_counter() - started < 4.0  # 20 requests; the shadow takes 5 s each
    found = wait_stats(target, lambda s: s.get("mirror_timeouts", 0) >= 1)
    assert found["dropped"] >= 1, found

    dead = Backend("dead")  # nothing listens on its port: a crashed shadow
    point(target, champion, dead, mode="shadow")
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=5) as client:
        for i in range(10):
            assert client.post("/recommend", json={"user_id": f"u{i}"}).json()["who"] == "champion"
    assert time.perf_counter() - started < 4.0
    found = wait_stats(target, lambda s: s.get("mirror_errors", 0) >= 10)
    assert found["challenger"]["errors"] == 10, found


def test_canary_is_sticky_per_user_and_expect_continue_is_answered(
    backends: tuple[Backend, Backend, Backend, Backend], proxy: tuple[str, Path]
) -> None:
    champion, challenger, _, _ = backends
    url, target = proxy
    point(target, champion, challenger, mode="canary", share=0.5)
    with httpx.Client(base_url=url, timeout=5) as client:
        first = {
            u: client.post("/recommend", json={"user_id": u}).json()["who"]
            for u in "abcdefghijklmnop"
        }
        again = {
            u: client.post("/recommend", json={"user_id": u}).json()["who"]
            for u in "abcdefghijklmnop"
        }
    assert first == again and set(first.values()) == {"champion", "challenger"}

    port = int(url.rsplit(":", 1)[1])
    body = b'{"user_id": "a"}'
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /recommend HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200") and first["a"].encode() in answer


def test_without_a_challenger_bytes_are_piped_and_failures_are_one_line(
    backends: tuple[Backend, Backend, Backend, Backend], proxy: tuple[str, Path]
) -> None:
    """The plain path (no challenger): no target yet is a 503, a keep-alive connection is
    piped to the champion request after request (no request id added: bytes unchanged),
    and a backend that stays gone past the retry window is a 503 with Retry-After and a
    one-line JSON error."""
    champion, *_ = backends
    url, target = proxy
    gone = httpx.post(f"{url}/recommend", json={}, timeout=5)
    assert gone.status_code == 503 and gone.json() == {"error": "no backend deployed"}
    point(target, champion, None)
    with httpx.Client(base_url=url, timeout=5) as client:
        answers = [client.post("/recommend", json={"user_id": f"u{i}"}) for i in range(20)]
    assert {a.json()["who"] for a in answers} == {"champion"}
    assert {a.json()["request_id"] for a in answers} == {""}  # piped, not parsed
    target.write_text(json.dumps({"host": "127.0.0.1", "port": free_port(), "version": "v0"}))
    refused = httpx.post(f"{url}/recommend", json={}, timeout=5)
    assert refused.status_code == 503 and refused.json() == {"error": "backend unavailable"}
    assert refused.headers["retry-after"] == "1"


def test_a_restarting_backend_costs_no_new_request(
    backends: tuple[Backend, Backend, Backend, Backend], tmp_path: Path
) -> None:
    """The supervisor restarts a killed backend on a fresh port and then rewrites the
    target file: a request that arrives in between waits for it instead of failing."""
    champion, *_ = backends
    request = b"POST /recommend HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
    with started_proxy(tmp_path, retry_s=60.0) as (url, target):
        dead = free_port()  # the killed backend's port: connections are refused
        target.write_text(json.dumps({"host": "127.0.0.1", "port": dead, "version": "v1"}))
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(request)
            log = tmp_path / "proxy.log"
            deadline = time.monotonic() + 30
            while b"refused a connection" not in log.read_bytes():  # held, not failed
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            point(target, champion, None)  # the restarted backend is ready
            answer = b""
            while not answer.endswith(b"}") and (chunk := client.recv(65536)):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["who"] == "champion"


def test_a_gated_shadow_gets_copies_only_while_live_traffic_is_quiet(
    backends: tuple[Backend, Backend, Backend, Backend], proxy: tuple[str, Path]
) -> None:
    """mirror_max_live 0: request A's copy waits while B is still open; B stays open past
    the copy's timeout, so A's copy is dropped as stale; B's own copy goes (quiet then)."""
    _, challenger, _, busy = backends  # the champion takes 1 s per request
    url, target = proxy
    point(target, busy, challenger, mode="shadow", max_live=0, timeout_s=0.3)
    ids: dict[str, str] = {}

    def send(name: str) -> None:
        with httpx.Client(base_url=url, timeout=5) as client:
            ids[name] = client.post("/recommend", json={"user_id": name}).json()["request_id"]

    first = threading.Thread(target=send, args=("a",))
    first.start()
    deadline = time.monotonic() + 10
    while not busy.seen:  # A is open at the champion (whatever the machine's load)
        assert time.monotonic() < deadline, "request A never reached the champion"
        time.sleep(0.01)
    time.sleep(0.6)  # B opens while A is open (1 s), and stays open 0.6 s after A's answer
    send("b")
    first.join(5)
    found = wait_stats(target, lambda s: s.get("challenger", {}).get("requests") == 1)
    assert found["mirrored"] == 2 and found["mirror_stale"] == 1, found
    assert challenger.seen == [ids["b"]]
