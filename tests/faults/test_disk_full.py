"""A full filesystem (a real tmpfs, filled to the last byte) under the workspace."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.data.config import DataConfig
from components.lifecycle.ingest import batch_from_file, ingest
from components.validation.config import ValidationConfig
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace
from tests.faults.conftest import recops, rows

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs mounted for this test (root only; skipped with the reason otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
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


def _fill(disk: Path) -> Path:
    """Write one file until the filesystem is full; returns it (delete it to free)."""
    filler = disk / "filler"
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
    return filler


def test_a_full_disk_is_one_line_and_nothing_is_lost(small_disk, tmp_path, event_batches):
    week1, week2 = event_batches
    ws = Workspace.at(small_disk / "ws").ensure()
    cfgs = (DataConfig(), ValidationConfig(), VersioningConfig())
    assert ingest(batch_from_file(week1), ws, *cfgs).appended
    filler = _fill(small_disk)

    failed = recops(tmp_path, "data", "add", str(week2), "-w", str(ws.root))
    assert failed.rc == 12, failed.err
    assert "no space left on device" in failed.err and "Traceback" not in failed.err
    assert len([ln for ln in failed.err.splitlines() if ln.startswith("error:")]) == 1

    filler.unlink()
    store = DatasetStore(ws)
    assert [v.n_rows for v in store.versions()] == [rows(week1)]  # nothing half-accepted
    again = ingest(batch_from_file(week2), ws, *cfgs)  # the next try succeeds without a human
    assert again.appended and again.version.n_rows == rows(week1) + rows(week2)
    assert len(store.load_events()) == rows(week1) + rows(week2)
