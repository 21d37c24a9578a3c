"""A throw-away ``redis-server`` on loopback, for tests, benchmarks and local demos.

Production points ``features.redis_connection_string`` at a managed Redis; this only
starts the Debian ``redis-server`` binary with persistence off on a free port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from components.errors import FeatureStoreError
from components.net import free_port


def redis_server_binary() -> str | None:
    """Path of ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


@contextmanager
def local_redis(timeout_s: float = 10.0) -> Iterator[str]:
    """Run redis-server on a free loopback port; yields ``"127.0.0.1:<port>"``.

    Raises :class:`FeatureStoreError` when the binary is missing or it does not start.
    The server (persistence off, data in a temporary folder) is stopped on exit.
    """
    binary = redis_server_binary()
    if binary is None:
        raise FeatureStoreError(
            "redis-server not found on PATH", hint="apt-get install redis-server"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="recops-redis-") as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", workdir]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_port(proc, port, timeout_s)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _wait_for_port(proc: subprocess.Popen, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise FeatureStoreError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)
