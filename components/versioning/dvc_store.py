"""Versioned accepted events: a DVC-tracked directory inside a git repository.

Layout of ``workspace.data_dir`` (a git repo and a DVC repo):

- ``accepted/``: one Parquet file per accepted batch (``<batch_id>.parquet``), tracked by
  DVC as one directory output (``accepted.dvc``); accepted item catalogue batches (the
  catalogue contract) under ``accepted/catalogue/<batch_id>.parquet``, so a catalogue is
  versioned with the events it describes (a version's catalogue: its catalogue batches in
  order, the last row of an item id winning);
- ``versions.jsonl``: one line per dataset version ever created (git-tracked);
- git history: one commit per accepted batch (``accept <batch> -> <md5>``) and per checkout.

A **version id** is the full DVC md5 of the accepted directory (32 hex digits, without the
``.dir`` suffix); commands accept any unique prefix of 6+ digits. Every DVC/git call runs
under a file lock in ``workspace.lock_dir``. ``accept`` is atomic: on any error the
previous version is restored and verified by hash; after a crash (``kill -9`` between
``dvc add`` and the git commit) a journal file is left behind, and *every* entry point,
readers included, finishes the recovery first (:meth:`DatasetStore._recovered`), so no
command ever sees the half state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock
from pydantic import BaseModel, ConfigDict

from components.data.config import ColumnMapping
from components.errors import VersioningError, storage_full
from components.faults import pause_point
from components.validation.report import BatchStats, ValidationReport
from components.versioning.config import VersioningConfig
from components.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from components.data.stream import UserBuckets

# pandas, numpy, pyarrow and the event schema (which builds on pandas) are imported in the
# functions that touch frames: reading the version index (`recops status`,
# `recops data versions`) stays free of them.

log = logging.getLogger(__name__)

DVC_FILE = "accepted.dvc"
CATALOGUE_DIR = "catalogue"
INDEX_FILE = "versions.jsonl"
JOURNAL = "accept.journal.json"
BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_GIT_IDENTITY = {"user.name": "recops", "user.email": "recops@localhost"}


class DatasetVersion(BaseModel):
    """One version of the accepted dataset."""

    model_config = ConfigDict(extra="forbid")

    version: str
    git_rev: str | None = None
    created_at: datetime
    n_rows: int
    n_users: int
    n_items: int
    batches: list[str]
    validation: str = "passed"
    parent: str | None = None
    last_batch: BatchStats | None = None
    n_files: int = 0
    size_bytes: int = 0
    # batch id -> events_digest of its events: the content identity that keeps the same
    # events from being appended twice, whatever file or batch id they arrive under
    batch_digests: dict[str, str] = {}
    # accepted item catalogue batches, oldest first, and the distinct items they describe
    catalogue_batches: list[str] = []
    n_catalogue_items: int = 0

    @property
    def short(self) -> str:
        """The first 12 hex digits, for tables."""
        return self.version[:12]


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes (streamed)."""
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dir_md5(directory: Path) -> str:
    """DVC's md5 of a directory: md5 of the sorted JSON list of ``{md5, relpath}`` entries.

    Computed here, independently of DVC, to verify what a checkout restored.
    """
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        entries.append({"md5": file_md5(path), "relpath": path.relative_to(directory).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest()


def events_digest(events: pd.DataFrame) -> str:
    """Content identity of a batch of events: independent of row order, file format and
    batch id (sha256 over the sorted per-row hashes of the contract columns)."""
    import pandas as pd

    from components.data.schema import EVENT, ITEM, TIME, USER

    columns = [c for c in (USER, ITEM, TIME, EVENT) if c in events.columns]
    rows = pd.util.hash_pandas_object(events[columns], index=False).to_numpy()
    rows.sort()
    return hashlib.sha256(rows.tobytes()).hexdigest()


class _FrameBatch:
    """A batch held as one contract frame."""

    def __init__(self, events: pd.DataFrame) -> None:
        self.events = events

    def digest(self) -> str:
        return events_digest(self.events)

    def write(self, path: Path) -> None:
        self.events.to_parquet(path, index=False)

    def stats(self, batch_id: str) -> BatchStats:
        from components.validation.runner import batch_stats

        return batch_stats(self.events, batch_id)


class FileBatch:
    """A batch of Parquet files too big for one frame (the streaming data path).

    ``passes`` (from :func:`components.data.stream.plan_passes`) bounds the rows held at
    once while the digest is computed; the digest equals :func:`events_digest` of the
    same events as one frame (per-row hashes of the same dtypes, sorted), at 8 bytes a
    row for the sort. With ``buckets`` (the batch already written by user hash) each
    pass reads only its own buckets; the stored file is written from the input files,
    in their order."""

    def __init__(
        self,
        path: str | Path,
        passes: int,
        columns: ColumnMapping | None = None,
        default_event_type: str = "interaction",
        buckets: UserBuckets | None = None,
    ) -> None:
        from components.data.stream import list_event_files, scan_events

        self.files = list_event_files(path)
        self.lazy = scan_events(self.files, columns, default_event_type)
        self.passes = passes
        self.buckets = buckets

    def _passes(self) -> Iterator[pd.DataFrame]:
        """Each pass as pandas, ids and event types as categoricals: pandas hashes a
        categorical's values exactly as the same strings (categories once, then codes),
        about three times faster than Arrow-backed strings."""
        import polars as pl

        from components.data.schema import EVENT, ITEM, USER
        from components.data.stream import ROW, user_passes

        source = self.lazy if self.buckets is None else self.buckets
        encoded = pl.col(USER, ITEM, EVENT).cast(pl.Categorical)
        for chosen in user_passes(source, self.passes):
            rows = chosen.collect(engine="streaming").drop(ROW)
            yield rows.with_columns(encoded).to_pandas()

    def digest(self) -> str:
        import numpy as np
        import pandas as pd

        from components.data.schema import EVENT, ITEM, TIME, USER

        hashes = []
        for frame in self._passes():
            columns = [c for c in (USER, ITEM, TIME, EVENT) if c in frame.columns]
            hashes.append(pd.util.hash_pandas_object(frame[columns], index=False).to_numpy())
            del frame
        rows = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
        del hashes
        rows.sort()
        return hashlib.sha256(rows.tobytes()).hexdigest()

    def write(self, path: Path) -> None:
        from components.data.stream import ROW

        self.lazy.drop(ROW).sink_parquet(path)

    def stats(self, batch_id: str) -> BatchStats:
        from components.validation.runner import file_batch_stats

        return file_batch_stats(self.lazy, self.files.n_rows, batch_id)


class AlreadyAccepted(VersioningError):
    """The batch's events are already part of the current dataset version."""

    def __init__(self, batch_id: str, same_as: str, version: DatasetVersion) -> None:
        super().__init__(
            f"batch {batch_id} holds the same events as batch {same_as}, already in dataset "
            f"version {version.short}: not appended again"
        )
        self.same_as = same_as
        self.version = version


def _quiet_dvc() -> None:
    """No analytics, and no "to track the changes with git, run" hints: we commit ourselves."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    logging.getLogger("dvc").setLevel(logging.WARNING)


def _contract_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    from components.data.schema import EVENT, ITEM, STRING_DTYPE, TIME, USER

    for col in (USER, ITEM, EVENT):
        if col in frame.columns and frame[col].dtype != STRING_DTYPE:
            frame[col] = frame[col].astype(STRING_DTYPE)
    if TIME in frame.columns:
        frame[TIME] = pd.to_datetime(frame[TIME], utc=True).astype("datetime64[ns, UTC]")
    return frame


def _batch_with_digest(version: DatasetVersion, digest: str) -> str | None:
    return next((b for b, d in version.batch_digests.items() if d == digest), None)


class DatasetStore:
    """Accepted events of one workspace, versioned with DVC (and git)."""

    def __init__(self, workspace: Workspace, cfg: VersioningConfig | None = None) -> None:
        self.workspace = workspace
        self.cfg = cfg or VersioningConfig()
        self.root = workspace.data_dir
        self.accepted = workspace.accepted_dir
        self.dvc_file = self.root / DVC_FILE
        self.index_file = self.root / INDEX_FILE
        self._held = 0  # > 0 inside a locked section, which runs its own recovery

    # --- plumbing -----------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.workspace.lock_dir.mkdir(parents=True, exist_ok=True)
        # one lock object per path in this process (is_singleton): re-entrant, so a reader
        # that finishes a recovery under the lock can be called from inside it
        with FileLock(str(self.workspace.lock_dir / "dvc.lock"), is_singleton=True):
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1

    def _git(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
        )
        if check and done.returncode != 0:
            raise VersioningError(
                f"git {args[0]} failed in {self.root}: {done.stderr.strip()[:300]}"
            )
        return done.stdout.strip()

    @contextmanager
    def _dvc(self):
        _quiet_dvc()
        from dvc.repo import Repo

        try:
            with Repo(str(self.root)) as repo:
                yield repo
        except VersioningError:
            raise
        except Exception as exc:  # DVC raises many types; the user needs one line
            full = storage_full(exc)
            if full is not None:
                raise full from exc
            raise VersioningError(f"dvc failed in {self.root}: {exc}") from exc

    # --- setup --------------------------------------------------------------------------
    def init(self) -> None:
        """git init + dvc init + the configured remote, each only when missing (idempotent)."""
        with self._locked():
            self._init()

    def _init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / ".git").exists():
            self._git("init", "-q")
        for key, value in _GIT_IDENTITY.items():
            if not self._git("config", "--get", key, check=False):
                self._git("config", key, value)
        if not (self.root / ".dvc").exists():
            _quiet_dvc()
            from dvc.repo import Repo

            Repo.init(str(self.root)).close()
        self._configure_remote()
        if not self._git("rev-parse", "--verify", "-q", "HEAD", check=False):
            self._git("add", ".dvc/config", ".dvc/.gitignore", ".dvcignore")
            self._git("commit", "-q", "-m", "recops: initialise dataset repository")

    def remote_url(self) -> str:
        """The remote's URL: the configured one, else the workspace's local remote folder."""
        return self.cfg.remote_url or str(self.workspace.dvc_remote_dir)

    def _configure_remote(self) -> None:
        url = self.remote_url()
        if not self.cfg.remote_url:
            Path(url).mkdir(parents=True, exist_ok=True)
        wanted: dict[str, str | int] = {"url": url}
        if self.cfg.remote_endpoint_url:
            wanted["endpointurl"] = self.cfg.remote_endpoint_url
        if url.startswith("s3://"):
            wanted["connect_timeout"] = self.cfg.remote_timeout_s
            wanted["read_timeout"] = self.cfg.remote_timeout_s
            # botocore retries each request 4 times on top of s3fs's own 5 tries:
            # measured against an endpoint that never answers (2 s timeouts), a push
            # failed after 110 s with botocore's retries and 31 s without them
            os.environ.setdefault("AWS_MAX_ATTEMPTS", "1")
        with self._dvc() as repo:
            current = repo.config.read("repo")
            remote = current.get("remote", {}).get(self.cfg.remote_name, {})
            core = current.get("core", {})
            if (
                all(remote.get(k) == v for k, v in wanted.items())
                and core.get("remote") == self.cfg.remote_name
                and core.get("analytics") is False
            ):
                return
            with repo.config.edit("repo") as conf:
                # another URL is another remote: keep none of the old one's settings (an
                # S3 endpoint on a local folder is a DVC config error)
                same = remote.get("url") == url
                conf["remote"][self.cfg.remote_name] = {**remote, **wanted} if same else wanted
                conf["core"]["remote"] = self.cfg.remote_name
                conf["core"]["analytics"] = False
        if self._git("rev-parse", "--verify", "-q", "HEAD", check=False):
            self._git("add", ".dvc/config")
            if self._git("status", "--porcelain", "--", ".dvc/config"):
                self._git("commit", "-q", "-m", f"recops: remote {self.cfg.remote_name} -> {url}")

    # --- reading ------------------------------------------------------------------------
    def _recovered(self) -> None:
        """Finish an interrupted accept before reading (a no-op stat when none was).

        The journal exists only while an accept runs or after one died; taking the lock
        waits for a running one, and a dead one's journal is rolled back under it."""
        if self._held or not (self.workspace.lock_dir / JOURNAL).exists():
            return
        with self._locked():
            self._recover()

    def _index(self) -> list[DatasetVersion]:
        self._recovered()
        if not self.index_file.exists():
            return []
        lines = self.index_file.read_text().splitlines()
        return [DatasetVersion.model_validate_json(line) for line in lines if line.strip()]

    def _revs(self) -> dict[str, str]:
        """version md5 -> the commit that created it."""
        if not (self.root / ".git").exists():
            return {}
        log_text = self._git("log", "--format=%H %s", check=False)
        revs: dict[str, str] = {}
        for line in log_text.splitlines():
            rev, _, subject = line.partition(" ")
            found = re.match(r"recops: accept \S+ -> ([0-9a-f]{32})$", subject)
            if found:
                revs.setdefault(found.group(1), rev)
        return revs

    def _tracked_md5(self, text: str | None = None) -> str | None:
        if text is None:
            self._recovered()
            if not self.dvc_file.exists():
                return None
            text = self.dvc_file.read_text()
        found = re.search(r"md5: ([0-9a-f]{32})\.dir", text)
        return found.group(1) if found else None

    def versions(self) -> list[DatasetVersion]:
        """Every version ever created, oldest first, with its git rev."""
        revs = self._revs()
        return [v.model_copy(update={"git_rev": revs.get(v.version)}) for v in self._index()]

    def current(self) -> DatasetVersion | None:
        """The version the accepted folder holds now (None before the first batch)."""
        md5 = self._tracked_md5()
        if md5 is None:
            return None
        return self.show(md5)

    def show(self, version: str) -> DatasetVersion:
        """The version whose id starts with ``version`` (6+ hex digits)."""
        wanted = version.strip().lower()
        if len(wanted) < 6 or not re.fullmatch(r"[0-9a-f]+", wanted):
            raise VersioningError(f"{version!r} is not a version id (6+ hex digits of an md5)")
        matches = {v.version: v for v in self.versions() if v.version.startswith(wanted)}
        if not matches:
            raise VersioningError(
                f"no dataset version {version!r}", hint="list them with `recops data versions`"
            )
        if len(matches) > 1:
            raise VersioningError(f"version prefix {version!r} is ambiguous: {sorted(matches)}")
        return next(iter(matches.values()))

    def stats(self) -> BatchStats | None:
        """Stats of the last batch of the current version (the drift baseline), if any."""
        current = self.current()
        return current.last_batch if current else None

    def _cache_path(self, md5: str) -> Path:
        return self.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]

    def _version_files(self, version: DatasetVersion) -> list[Path]:
        """Parquet files of ``version`` in batch order (from the working tree or DVC cache)."""
        if version.version == self._tracked_md5():
            return [self.accepted / f"{batch}.parquet" for batch in version.batches]
        manifest = Path(str(self._cache_path(version.version)) + ".dir")
        if not manifest.exists():
            self._fetch(version)
        by_name = {
            e["relpath"]: self._cache_path(e["md5"]) for e in json.loads(manifest.read_text())
        }
        return [by_name[f"{batch}.parquet"] for batch in version.batches]

    def _catalogue_files(self, version: DatasetVersion) -> list[Path]:
        """Catalogue Parquet files of ``version`` in batch order (working tree or DVC cache)."""
        names = [f"{CATALOGUE_DIR}/{batch}.parquet" for batch in version.catalogue_batches]
        if version.version == self._tracked_md5():
            return [self.accepted / name for name in names]
        manifest = Path(str(self._cache_path(version.version)) + ".dir")
        if not manifest.exists():
            self._fetch(version)
        by_name = {
            e["relpath"]: self._cache_path(e["md5"]) for e in json.loads(manifest.read_text())
        }
        return [by_name[name] for name in names]

    def load_catalogue(self, version: str | None = None) -> pd.DataFrame | None:
        """The item catalogue of the current (or given) version (None when it has none):
        its catalogue batches in order, the last row of each item id kept."""
        import pandas as pd

        from components.data.schema import ITEM

        chosen = self.current() if version is None else self.show(version)
        if chosen is None or not chosen.catalogue_batches:
            return None
        frames = [pd.read_parquet(path) for path in self._catalogue_files(chosen)]
        merged = pd.concat(frames, ignore_index=True)
        return merged.drop_duplicates(ITEM, keep="last").reset_index(drop=True)

    def event_files(self, version: str | None = None) -> list[Path]:
        """The Parquet files of the current (or given) version's event batches, in batch
        order (for engines that read files themselves: ``data.engine=spark``)."""
        chosen = self.current() if version is None else self.show(version)
        return [] if chosen is None else self._version_files(chosen)

    def load_events(self, version: str | None = None) -> pd.DataFrame:
        """Accepted events of the current (or given) version, in batch order, contract dtypes."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from components.data.schema import empty_events

        chosen = self.current() if version is None else self.show(version)
        if chosen is None:
            return empty_events()
        tables = [pq.read_table(path) for path in self._version_files(chosen)]
        if not tables:
            return empty_events()
        # permissive: batches written by polars hold large_string ids
        table = pa.concat_tables(tables, promote_options="permissive")
        return _contract_dtypes(table.to_pandas())

    # --- writing ------------------------------------------------------------------------
    def accept(
        self, events: pd.DataFrame | FileBatch, batch_id: str, report: ValidationReport
    ) -> DatasetVersion:
        """Append a validated batch and record a new version (dvc add, push, git commit).

        ``events`` is a frame, or a :class:`FileBatch` (Parquet files read in passes:
        written to the store by polars' streaming sink, never one frame in memory).

        Raises :class:`VersioningError` when the report did not pass, the batch id is
        invalid or already accepted, or DVC/git fail; the previous version is then intact.
        """
        if not report.passed:
            raise VersioningError(
                f"batch {batch_id} did not pass validation; refusing to accept it"
            )
        if not BATCH_ID.match(batch_id):
            raise VersioningError(f"bad batch id {batch_id!r}: use letters, digits, '.', '_', '-'")
        with self._locked():
            self._init()
            self._recover()
            parent = self.current()
            if parent and batch_id in parent.batches:
                raise AlreadyAccepted(batch_id, batch_id, parent)
            batch = events if isinstance(events, FileBatch) else _FrameBatch(events)
            digest = batch.digest()
            if parent and (same := _batch_with_digest(parent, digest)) is not None:
                raise AlreadyAccepted(batch_id, same, parent)
            version = self._journaled(
                batch_id, lambda: self._accept(batch, batch_id, report, parent, digest)
            )
        log.info("accepted batch %s -> dataset version %s", batch_id, version.short)
        return version

    def _journaled(self, batch_id: str, write: Callable[[], DatasetVersion]) -> DatasetVersion:
        """Run one accepting write (under the lock) behind the crash journal: a failure
        rolls it back here; a kill leaves the journal naming the batch for recovery."""
        journal = self.workspace.lock_dir / JOURNAL
        journal.write_text(json.dumps({"batch_id": batch_id}))
        try:
            return write()
        except BaseException:
            self._rollback(batch_id)
            raise
        finally:
            journal.unlink(missing_ok=True)

    def accept_catalogue(
        self, catalogue: pd.DataFrame, batch_id: str, report: ValidationReport
    ) -> DatasetVersion:
        """Add a validated item catalogue batch to the current version: a new version with
        the same events (dvc add, push, git commit; atomic like :meth:`accept`).

        Raises :class:`VersioningError` when the report did not pass, no events were
        accepted yet (a catalogue describes a dataset), or the batch is already in it."""
        if not report.passed:
            raise VersioningError(f"catalogue {batch_id} did not pass validation; refusing it")
        if not BATCH_ID.match(batch_id):
            raise VersioningError(f"bad batch id {batch_id!r}: use letters, digits, '.', '_', '-'")
        with self._locked():
            self._init()
            self._recover()
            parent = self.current()
            if parent is None:
                raise VersioningError(
                    "no dataset version to add the catalogue to", hint="add events first"
                )
            if batch_id in parent.catalogue_batches:
                raise AlreadyAccepted(batch_id, batch_id, parent)
            version = self._journaled(
                batch_id, lambda: self._accept_catalogue(catalogue, batch_id, parent)
            )
        log.info("accepted catalogue %s -> dataset version %s", batch_id, version.short)
        return version

    def _accept_catalogue(
        self, catalogue: pd.DataFrame, batch_id: str, parent: DatasetVersion
    ) -> DatasetVersion:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from components.data.schema import ITEM

        folder = self.accepted / CATALOGUE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".{batch_id}.catalogue.partial"
        catalogue.to_parquet(partial, index=False)
        partial.replace(folder / f"{batch_id}.parquet")
        md5 = self._add_accepted()
        batches = [*parent.catalogue_batches, batch_id]
        items = pa.concat_tables(
            [pq.read_table(folder / f"{b}.parquet", columns=[ITEM]) for b in batches]
        )
        version = parent.model_copy(
            update={
                "version": md5,
                "git_rev": None,
                "created_at": datetime.now(timezone.utc),
                "parent": parent.version,
                "catalogue_batches": batches,
                "n_catalogue_items": pc.count_distinct(items[ITEM]).as_py(),
            }
        )
        return self._commit_version(version, batch_id)

    def _add_accepted(self) -> str:
        """``dvc add`` (and push) the accepted folder; its new md5."""
        with self._dvc() as repo:
            repo.add([str(self.accepted)])
            md5 = self._tracked_md5(self.dvc_file.read_text())
            if md5 is None:
                raise VersioningError(f"dvc add did not record {self.accepted}")
            pause_point("versioning.after_dvc_add")
            if self.cfg.push:
                repo.push(targets=[str(self.dvc_file)], remote=self.cfg.remote_name)
        return md5

    def _commit_version(self, version: DatasetVersion, batch_id: str) -> DatasetVersion:
        """Append ``version`` to the index and commit it (git); with its git rev."""
        with self.index_file.open("a") as fh:
            fh.write(version.model_dump_json() + "\n")
        pause_point("versioning.before_commit")
        self._git("add", DVC_FILE, INDEX_FILE, ".gitignore")
        self._git("commit", "-q", "-m", f"recops: accept {batch_id} -> {version.version}")
        return version.model_copy(update={"git_rev": self._git("rev-parse", "HEAD")})

    def _accept(
        self,
        batch: _FrameBatch | FileBatch,
        batch_id: str,
        report: ValidationReport,
        parent: DatasetVersion | None,
        digest: str,
    ) -> DatasetVersion:
        self.accepted.mkdir(parents=True, exist_ok=True)
        target = self.accepted / f"{batch_id}.parquet"
        partial = self.root / f".{batch_id}.parquet.partial"
        batch.write(partial)
        partial.replace(target)
        batches = [*(parent.batches if parent else []), batch_id]
        md5 = self._add_accepted()
        counts = self._dataset_counts(batches)
        version = DatasetVersion(
            version=md5,
            created_at=datetime.now(timezone.utc),
            batches=batches,
            validation="passed",
            parent=parent.version if parent else None,
            last_batch=batch.stats(batch_id),
            batch_digests={**(parent.batch_digests if parent else {}), batch_id: digest},
            catalogue_batches=parent.catalogue_batches if parent else [],
            n_catalogue_items=parent.n_catalogue_items if parent else 0,
            **counts,
        )
        return self._commit_version(version, batch_id)

    def _dataset_counts(self, batches: list[str]) -> dict[str, int]:
        import polars as pl

        from components.data.schema import ITEM, USER

        # polars' streaming engine: the ids are never all in memory at once (pyarrow's
        # tables of every batch's ids took ~2 GB at 100M events)
        paths = [self.accepted / f"{b}.parquet" for b in batches]
        ids = pl.concat(
            [pl.scan_parquet(p).select(pl.col(USER, ITEM).cast(pl.String)) for p in paths]
        )
        row = ids.select(
            pl.len().alias("rows"),
            pl.col(USER).drop_nulls().n_unique().alias("users"),
            pl.col(ITEM).drop_nulls().n_unique().alias("items"),
        ).collect(engine="streaming")
        return {
            "n_rows": int(row["rows"][0]),
            "n_users": int(row["users"][0]),
            "n_items": int(row["items"][0]),
            "n_files": len(paths),
            "size_bytes": sum(p.stat().st_size for p in paths),
        }

    def _rollback(self, batch_id: str) -> None:
        """Restore the last committed version after a failed or interrupted accept."""
        log.warning("rolling back interrupted accept of batch %s", batch_id)
        (self.accepted / f"{batch_id}.parquet").unlink(missing_ok=True)
        (self.accepted / CATALOGUE_DIR / f"{batch_id}.parquet").unlink(missing_ok=True)
        (self.root / f".{batch_id}.parquet.partial").unlink(missing_ok=True)
        (self.root / f".{batch_id}.catalogue.partial").unlink(missing_ok=True)
        committed = self._git("ls-tree", "--name-only", "HEAD", check=False).splitlines()
        for name in (DVC_FILE, INDEX_FILE, ".gitignore"):
            if name in committed:
                self._git("checkout", "HEAD", "--", name)
            else:
                (self.root / name).unlink(missing_ok=True)
        if DVC_FILE in committed:
            self._restore_tracked()
        elif self.accepted.exists():
            for path in self.accepted.iterdir():
                path.unlink()

    def _recover(self) -> None:
        journal = self.workspace.lock_dir / JOURNAL
        if not journal.exists():
            return
        batch_id = json.loads(journal.read_text()).get("batch_id", "")
        committed = batch_id and batch_id in self._git("log", "-1", "--format=%s", check=False)
        if not committed:
            self._rollback(batch_id)
        journal.unlink(missing_ok=True)

    def _fetch(self, version: DatasetVersion) -> None:
        if not version.git_rev:
            raise VersioningError(f"version {version.short} has no git commit to fetch from")
        with self._dvc() as repo:
            repo.fetch(
                targets=[str(self.dvc_file)], revs=[version.git_rev], remote=self.cfg.remote_name
            )

    def _restore_tracked(self) -> str:
        """``dvc checkout`` of accepted.dvc, then verify the folder's md5; returns it."""
        wanted = self._tracked_md5()
        with self._dvc() as repo:
            repo.checkout(targets=[str(self.dvc_file)], force=True)
        actual = dir_md5(self.accepted)
        if actual != wanted:
            raise VersioningError(
                f"restored {self.accepted} hashes to {actual}, expected {wanted}",
                hint="the DVC cache may be corrupted; try `dvc pull` in the data folder",
            )
        return actual

    def checkout(self, version: str) -> DatasetVersion:
        """Restore the accepted folder to ``version`` exactly (verified by md5) and commit it."""
        target = self.show(version)
        with self._locked():
            self._init()
            self._recover()
            if target.git_rev is None:
                raise VersioningError(f"version {target.short} has no git commit")
            manifest = Path(str(self._cache_path(target.version)) + ".dir")
            if not manifest.exists():
                self._fetch(target)
            old_dvc = self.dvc_file.read_text() if self.dvc_file.exists() else None
            self.dvc_file.write_text(self._git("show", f"{target.git_rev}:{DVC_FILE}") + "\n")
            try:
                self._restore_tracked()
            except BaseException:
                if old_dvc is not None:
                    self.dvc_file.write_text(old_dvc)
                    self._restore_tracked()
                raise
            self._git("add", DVC_FILE)
            if self._git("status", "--porcelain", "--", DVC_FILE):
                self._git("commit", "-q", "-m", f"recops: checkout {target.version}")
        log.info("checked out dataset version %s", target.short)
        return target
