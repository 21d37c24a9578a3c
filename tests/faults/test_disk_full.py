"""A full filesystem (a real tmpfs, filled to the last byte) under the workspace: while a
batch is versioned, while a model trains (checkpoint and bundle writes), while a bento is
built, and under the serving log. Each is one line (exit 12) with nothing half-kept, and
the next try succeeds once there is space."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.data.config import DataConfig, SyntheticConfig
from components.data.synthetic import generate_events
from components.deploy.bento import build_bento, same_files
from components.deploy.config import LocalDeployConfig, ServeConfig
from components.errors import StorageFull
from components.features.config import FeaturesConfig
from components.lifecycle.ingest import batch_from_file, ingest
from components.monitoring.config import ServingLogConfig
from components.monitoring.servelog import SERVED_SCHEMA, ParquetLog, now_us, read_log
from components.registry.store import ModelRegistry
from components.status import run_records
from components.validation.config import ValidationConfig
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace
from tests.faults.conftest import recops, rows
from tests.services.conftest import register

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 64 MiB tmpfs mounted for this module (root only; skipped with the reason otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount_point = tmp_path_factory.mktemp("disk")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture()
def small_disk(tmpfs: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """An empty folder of its own on the tmpfs (emptied afterwards for the next test)."""
    folder = tmpfs / request.node.name
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
    (tmpfs / "filler").unlink(missing_ok=True)


def _fill(disk: Path, leave: int = 0) -> Path:
    """Write one file until the filesystem is full, then free ``leave`` bytes (a few
    pages: room for a small write, none for a big one); returns the filler (delete it
    to free the disk)."""
    filler = disk.parent / "filler"
    reserve = disk.parent / "reserve"
    reserve.write_bytes(b"\0" * leave)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):  # big blocks, then the last bytes
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as full:
        (disk / "probe").write_bytes(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC
    reserve.unlink()
    return filler


def _one_error_line(stderr: str) -> None:
    assert "no space left on device" in stderr and "Traceback" not in stderr, stderr
    assert len([ln for ln in stderr.splitlines() if ln.startswith("error:")]) == 1, stderr


def test_a_full_disk_while_versioning_is_one_line_and_nothing_is_lost(
    small_disk, tmp_path, event_batches
):
    week1, week2 = event_batches
    ws = Workspace.at(small_disk / "ws").ensure()
    cfgs = (DataConfig(), ValidationConfig(), VersioningConfig())
    assert ingest(batch_from_file(week1), ws, *cfgs).appended
    filler = _fill(small_disk)

    failed = recops(tmp_path, "data", "add", str(week2), "-w", str(ws.root))
    assert failed.rc == 12, failed.err
    _one_error_line(failed.err)

    filler.unlink()
    store = DatasetStore(ws)
    assert [v.n_rows for v in store.versions()] == [rows(week1)]  # nothing half-accepted
    again = ingest(batch_from_file(week2), ws, *cfgs)  # the next try succeeds without a human
    assert again.appended and again.version.n_rows == rows(week1) + rows(week2)
    assert len(store.load_events()) == rows(week1) + rows(week2)


def test_a_full_disk_while_training_is_one_line_and_leaves_no_bundle(
    small_disk, tmp_path, event_batches
):
    week1, _ = event_batches
    ws = Workspace.at(small_disk / "ws").ensure()
    args = ["train", "--data", str(week1), "--format", "csv", "-w", str(ws.root)]
    args += ["--set", "train.batch_size=16", "--set", "train.max_epochs=2"]
    _fill(small_disk, leave=64 * 1024)  # the run record fits, a checkpoint does not

    failed = recops(tmp_path, *args)
    assert failed.rc == 12, failed.err
    _one_error_line(failed.err)
    [record] = run_records(ws)  # a reader: the dead run is not "running" any more
    assert record.status in {"failed", "interrupted"}
    run_dir = ws.runs_dir / record.run_id
    assert not (run_dir / "model").exists() and not list(run_dir.glob(".model.*"))

    (small_disk.parent / "filler").unlink()
    again = recops(tmp_path, *args)  # the next try succeeds without a human
    assert again.rc == 0, again.err
    statuses = sorted(r.status for r in run_records(ws))
    assert statuses == sorted(["candidate", record.status])


def test_a_full_disk_while_building_a_bento_is_one_line_and_keeps_no_bento(small_disk):
    ws = Workspace.at(small_disk / "ws").activate()
    events = generate_events(SyntheticConfig(n_users=30, n_items=20, n_events=400, seed=1))
    registered = register(ModelRegistry(ws), events, seed=1, ndcg=0.1)
    version = registered.version
    _fill(small_disk, leave=64 * 1024)  # the bentofile fits; the model copy and bento do not

    with pytest.raises(StorageFull, match="no space left on device") as full:
        build_bento(ws, version, ServeConfig(), LocalDeployConfig(), FeaturesConfig())
    assert full.value.exit_code == 12 and "\n" not in str(full.value)
    assert (ws.deploy_dir / "bentofiles" / f"{version}.yaml").exists()  # failed past it
    assert not list((ws.bentoml_home / "bentos").rglob("bento.yaml"))  # no bento kept
    for copy in (ws.bentoml_home / "models").glob(f"*/{version}"):  # a model kept is whole
        assert same_files(Path(registered.path), copy)


def test_a_full_disk_under_the_serving_log_loses_only_that_flush(small_disk):
    cfg = ServingLogConfig(flush_interval_s=3600, flush_rows=10_000)
    served = ParquetLog(small_disk / "log", "served", SERVED_SCHEMA, cfg)
    try:
        served.folder.mkdir()
        filler = _fill(small_disk)

        def row(n: int) -> tuple:
            return (f"r{n}", now_us(), "u1", 3, 0, "model", "v1", ["i1"], [0.5], ["i0"])

        assert served.record(row(1))
        assert served.flush() == 0  # the write failed: counted, never raised
        assert served.stats.write_errors == 1 and served.stats.rows_failed == 1
        filler.unlink()
        assert served.record(row(2)) and served.flush() == 1
        served.rotate()
        table = read_log(served.folder, "served", SERVED_SCHEMA)  # every part is whole
        assert table.column("request_id").to_pylist() == ["r2"]
    finally:
        served.close()
