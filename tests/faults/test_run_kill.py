"""``kill -9`` of ``recops run`` mid-epoch (its flow's temporary Prefect server running, its
dataset version accepted, a champion in the registry), and of a registration between
writing the model and publishing it: the flow's temporary server is gone by the end of the
next command (recops' own stops itself when its owner dies, Prefect's own is reaped by
the next command), the next command marks the run
``interrupted`` and deletes what it half wrote, the champion and the data are as before,
and the next run goes through without a human."""

from __future__ import annotations

import contextlib
import sys

import psutil
import pytest

from components.data.config import SyntheticConfig
from components.data.synthetic import generate_events
from components.registry.store import ModelRegistry
from components.status import run_records
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace
from tests.faults.conftest import kill_at, recops, rows
from tests.services.conftest import register

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SMALL = [
    "--set",
    "deploy.target=none",
    "--set",
    "train.batch_size=16",
    "--set",
    "features.enabled=false",
    # few epochs: validation (so the first checkpoint) comes within the first epoch
    # instead of after a tenth of the default 200
    "--set",
    "train.max_epochs=3",
    "--set",
    "explain.report=false",
]


#: recops' early temporary server and the one Prefect starts itself
TEMPORARY_SERVER_APPS = (
    "flows.prefect_app:create_temporary_app",
    "prefect.server.api.server:create_app",
)


def _servers_owned_by(pid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = proc.info["cmdline"] or []
            server = any(app in cmdline for app in TEMPORARY_SERVER_APPS)
            if server and proc.environ().get("RECOPS_OWNER", "").startswith(f"{pid}:"):
                found.append(proc)
    return found


def test_a_run_killed_mid_epoch_is_recorded_and_the_next_run_succeeds(tmp_path, event_batches):
    week1, _ = event_batches
    ws = Workspace.at(tmp_path / "ws").activate()
    registry = ModelRegistry(ws)
    events = generate_events(SyntheticConfig(n_users=80, n_items=60, n_events=3000, seed=11))
    champion = register(registry, events, seed=1, ndcg=0.01).version
    registry.promote(champion, actor="test", reason="first")
    history_before = registry.history()

    args = ["run", "--data", str(week1), "--format", "csv", "-w", str(ws.root), *SMALL]
    killed = kill_at(tmp_path, "training.mid_epoch", *args)
    left = _servers_owned_by(killed)  # recops' own stops itself; Prefect's own is reaped
    [run_dir] = list(ws.runs_dir.iterdir())
    assert (run_dir / "checkpoints").exists(), "killed before any checkpoint: not mid-training"

    [record] = run_records(ws)  # a reader (what `recops status` lists) recovers
    assert (record.run_id, record.status) == (run_dir.name, "interrupted")
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "model").exists()
    assert registry.history() == history_before and registry.state().champion == champion
    assert [v.n_rows for v in DatasetStore(ws).versions()] == [rows(week1)]  # kept, once

    again = recops(tmp_path, *args)  # no stale lock, no human
    assert again.rc == 0, again.err
    for proc in left:  # stopped by itself (owner watch) or by the next command's reaper
        proc.wait(timeout=60)
    assert not _servers_owned_by(killed)
    assert [v.n_rows for v in DatasetStore(ws).versions()] == [rows(week1)]  # not appended twice
    statuses = {r.run_id: r.status for r in run_records(ws)}
    assert statuses[run_dir.name] == "interrupted"
    assert {s for r, s in statuses.items() if r != run_dir.name} <= {"champion", "rejected"}
    assert len(registry.list()) == 2


def test_a_registration_killed_before_publishing_leaves_nothing(tmp_path):
    ws = Workspace.at(tmp_path / "ws").activate()
    script = (
        "import sys; from components.data.config import SyntheticConfig; "
        "from components.data.synthetic import generate_events; "
        "from components.registry.store import ModelRegistry; "
        "from components.workspace import Workspace; "
        "from tests.services.conftest import register; "
        "events = generate_events(SyntheticConfig(n_users=30, n_items=20, n_events=400, seed=1)); "
        "register(ModelRegistry(Workspace.at(sys.argv[1])), events, seed=1, ndcg=0.1)"
    )
    kill_at(
        tmp_path, "registry.before_publish", str(ws.root), python=[sys.executable, "-c", script]
    )
    registry = ModelRegistry(ws)
    assert registry.list() == [] and len(list(registry.models_dir.glob(".*.tmp"))) == 1

    events = generate_events(SyntheticConfig(n_users=30, n_items=20, n_events=400, seed=1))
    fresh = register(registry, events, seed=2, ndcg=0.1)  # the next registration cleans up
    assert [v.version for v in registry.list()] == [fresh.version]
    assert list(registry.models_dir.glob(".*.tmp")) == []
    assert {p.name for p in registry.models_dir.iterdir()} == {fresh.version}
