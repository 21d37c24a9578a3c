"""Inter-process locks for flow sections that must not interleave across runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock

from components.workspace import Workspace

PROMOTION_TIMEOUT_S = 3600


@contextmanager
def promotion_lock(ws: Workspace) -> Iterator[None]:
    """Serialise gate -> deploy -> promote: two concurrent retrains never both compare
    against a champion that the other is about to replace."""
    ws.lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(ws.lock_dir / "promotion.lock"), timeout=PROMOTION_TIMEOUT_S):
        yield
