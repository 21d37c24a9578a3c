"""Fixtures for infra tests: a throwaway PostgreSQL server on loopback (module-scoped)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.net import free_port
from tests.conftest import service_unavailable


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _as_pg_user() -> list[str]:
    """initdb refuses to run as root: run the server as the `postgres` system user then."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        service_unavailable("running as root and `runuser` is missing: cannot start PostgreSQL")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        service_unavailable("running as root and there is no `postgres` user to run PostgreSQL as")
    return [runuser, "-u", "postgres", "--"]


@dataclass(frozen=True)
class Postgres:
    """A running throwaway server: its SQLAlchemy URL and data folder."""

    url: str
    data: Path

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A fresh server on a free loopback port with a database `feast` (skips when
    PostgreSQL or psycopg is missing); stopped and deleted afterwards."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install recops[scale])")
    bindir = _pg_bin()
    if bindir is None:
        service_unavailable(
            "PostgreSQL server binaries (initdb) not found: apt-get install -y postgresql"
        )
    prefix = _as_pg_user()
    root = Path(tempfile.mkdtemp(prefix="recops-pg-"))
    if prefix:
        shutil.chown(root, user="postgres")
    data, port = root / "data", free_port()
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "feast",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-o", options, "-w", "-l", str(root / "server.log"), "start"],
        check=True,
        capture_output=True,
    )
    try:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={port} user=feast dbname=postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE feast")
        yield Postgres(f"postgresql+psycopg://feast@127.0.0.1:{port}/feast", data)
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL (psycopg 3) of a fresh database `feast` on a private server."""
    with postgres_server() as server:
        yield server.url


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throw-away redis-server on a free loopback port (skips when not installed)."""
    from components.features.local_redis import local_redis, redis_server_binary

    if redis_server_binary() is None:
        service_unavailable("redis-server not found on PATH (apt-get install -y redis-server)")
    with local_redis() as url:
        yield url
