"""A full disk is recognised however the library that hit it reports it."""

from __future__ import annotations

import errno
import shutil

from components.errors import StorageFull, storage_full


def test_a_copytree_error_list_with_a_full_disk_is_storage_full() -> None:
    # what shutil.copytree raises (BentoML moving a saved model into its store)
    failures = [
        ("/tmp/a/weights.pt", "/store/m/weights.pt", "[Errno 28] No space left on device: 'x'"),
        ("/tmp/a/model.json", "/store/m/model.json", "[Errno 28] No space left on device: 'y'"),
    ]
    found = storage_full(shutil.Error(failures))
    assert isinstance(found, StorageFull)
    assert str(found).startswith("no space left on device writing /store/m/weights.pt")
    assert "\n" not in str(found)


def test_other_copy_failures_and_errors_are_not_storage_full() -> None:
    denied = [("/tmp/a/w", "/store/w", "[Errno 13] Permission denied: '/store/w'")]
    assert storage_full(shutil.Error(denied)) is None
    assert storage_full(OSError(errno.EACCES, "denied")) is None
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device", "/store/x")
    found = storage_full(wrapped)
    assert found is not None and "writing /store/x" in str(found)
