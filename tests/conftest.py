"""Shared fixtures: temporary workspaces, tiny synthetic datasets, the shared real data."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

# One private Prefect home per test session, set before anything imports Prefect and
# inherited by every subprocess the tests start: nothing reads or writes ~/.prefect, and
# no developer's PREFECT_API_URL sends test runs to their server.
SESSION_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="recops-test-prefect-"))
os.environ["PREFECT_HOME"] = str(SESSION_PREFECT_HOME)
os.environ.pop("PREFECT_API_URL", None)
# a fresh home means a fresh SQLite database: its migrations plus a busy 2-core machine
# outlast Prefect's default 20 s wait for the ephemeral server
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's console handler logs "Stopping temporary server" at interpreter exit, after
# pytest closed the stream; INFO from Prefect adds nothing to test output anyway
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from components.data.config import SyntheticConfig  # noqa: E402
from components.data.synthetic import generate_events  # noqa: E402
from components.net import free_port  # noqa: E402
from components.workspace import Workspace  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO_ROOT = Path(__file__).resolve().parents[1]

TINY_SYNTHETIC = SyntheticConfig(
    n_users=300, n_items=80, n_events=6000, n_clusters=4, seed=3, start="2026-01-01T00:00:00Z"
)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A fresh, activated workspace in a temporary directory."""
    return Workspace.at(tmp_path / "ws").activate()


@pytest.fixture(scope="session")
def tiny_events() -> pd.DataFrame:
    """~6k synthetic events with strong sequential structure (300 users, 80 items)."""
    return generate_events(TINY_SYNTHETIC)


REQUIRE_SERVICES_ENV = "RECOPS_REQUIRE_SERVICES"


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SESSION_PREFECT_HOME, ignore_errors=True)


def service_unavailable(reason: str) -> None:
    """A server or tool a test needs is missing: skip, or fail under ``RECOPS_REQUIRE_SERVICES=1``.

    CI sets the variable after installing redis-server, PostgreSQL and docker-compose, so a
    failed install shows up as failures instead of a quietly shorter test run.
    """
    if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV}=1: required here)", pytrace=False)
    pytest.skip(reason)


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with a clear reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real dataset not available at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture
def ml100k_inter() -> Path:
    return shared_file("ml-100k", "ml-100k.inter")


@pytest.fixture
def beauty_txt() -> Path:
    return shared_file("beauty", "Beauty.txt")


def stop_process_group(proc) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its children."""
    import signal
    import subprocess

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `prefect server start` on loopback (SQLite in a temporary PREFECT_HOME),
    shared by every test that needs one: yields (api_url, env for subprocesses)."""
    import subprocess
    import sys
    import time

    import httpx

    bin_dir = Path(sys.executable).parent
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (home / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prefect server did not become healthy in 120 s"
            time.sleep(0.5)
        yield api, {**env, "PREFECT_API_URL": api}
    finally:
        stop_process_group(server)


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class HeadlessPage:
    """What headless Chromium made of a page: the DOM after scripts ran, console messages."""

    def __init__(self, dom: str, console: list[str]) -> None:
        self.dom = dom
        self.console = console


@pytest.fixture
def chromium():
    """Open a local page in real headless Chromium; skip when no Chromium is installed.

    Returns ``open(path, screenshot=None) -> HeadlessPage``. Every console message the page
    produced (console.*, uncaught errors, Content-Security-Policy violations) is captured
    from Chromium's log.
    """
    import re
    import shutil
    import subprocess

    binary = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    if binary is None:
        service_unavailable(
            "chromium not installed (apt-get install chromium; .ci/run installs it)"
        )
    flags = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    flags += ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]

    def open_page(path: Path, screenshot: Path | None = None) -> HeadlessPage:
        url = Path(path).resolve().as_uri()
        done = subprocess.run(
            [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        console = [m.group(1) for m in re.finditer(r":CONSOLE[^\]]*\] (.*)", done.stderr)]
        if screenshot is not None:
            subprocess.run(
                [*flags, "--window-size=1100,2600", f"--screenshot={screenshot}", url],
                capture_output=True,
                timeout=120,
                check=True,
            )
        return HeadlessPage(done.stdout, console)

    return open_page
