"""Where recops keeps its state.

One :class:`Workspace` object knows every location (accepted data, quarantine, the DVC
repository and its local remote, GX context, Feast data, the model registry, the BentoML
store, deployments, run records). Nothing else in the code builds state paths by hand;
tests point a workspace at a temporary directory.

The root defaults to ``$RECOPS_HOME`` or ``./.recops`` and is created on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT_ENV = "RECOPS_HOME"
DEFAULT_ROOT = ".recops"


@dataclass(frozen=True)
class Workspace:
    """All state locations under one root directory."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str] | None = None) -> Workspace:
        """Workspace at ``root``, else ``$RECOPS_HOME``, else ``./.recops`` (absolute)."""
        chosen = root if root is not None else os.environ.get(DEFAULT_ROOT_ENV, DEFAULT_ROOT)
        return cls(Path(chosen).expanduser().resolve())

    # --- data -------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """The DVC (and git) repository holding accepted datasets."""
        return self.root / "data"

    @property
    def accepted_dir(self) -> Path:
        """Accepted batches (one Parquet file per batch), tracked by DVC as one directory."""
        return self.data_dir / "accepted"

    @property
    def dvc_remote_dir(self) -> Path:
        """The default local DVC remote."""
        return self.root / "dvc-remote"

    @property
    def quarantine_dir(self) -> Path:
        """Rejected batches with their validation reports, one folder per batch id."""
        return self.root / "quarantine"

    @property
    def gx_dir(self) -> Path:
        """File-backed Great Expectations context (suites, results, Data Docs)."""
        return self.root / "gx"

    @property
    def inbox_dir(self) -> Path:
        """Where generated (synthetic) batches are written before validation."""
        return self.root / "inbox"

    # --- features ---------------------------------------------------------------------
    @property
    def features_dir(self) -> Path:
        """Feast offline Parquet sources, SQLite online store and file registry."""
        return self.root / "features"

    # --- models -----------------------------------------------------------------------
    @property
    def registry_dir(self) -> Path:
        """Champion pointer, append-only history and the registry lock."""
        return self.root / "registry"

    @property
    def bentoml_home(self) -> Path:
        """BentoML home (model store and bento store) for this workspace."""
        return self.root / "bentoml"

    @property
    def runs_dir(self) -> Path:
        """One folder per training run: checkpoints, run record, evaluation output."""
        return self.root / "runs"

    @property
    def deploy_dir(self) -> Path:
        """State of local deployments (ports, pids, logs) and rendered manifests."""
        return self.root / "deploy"

    @property
    def prefect_dir(self) -> Path:
        """The local Prefect server: its SQLite database, log and process record."""
        return self.root / "prefect"

    @property
    def serving_log_dir(self) -> Path:
        """What the bento served and the feedback it received (Parquet parts)."""
        return self.root / "serving-log"

    @property
    def monitoring_dir(self) -> Path:
        """Monitoring reports (online metrics and drift), one JSON per run."""
        return self.root / "monitoring"

    @property
    def lock_dir(self) -> Path:
        """Inter-process locks (DVC calls, registry updates, deployments)."""
        return self.root / "locks"

    def ensure(self) -> Workspace:
        """Create the top-level folders; idempotent. Returns ``self`` for chaining."""
        for path in (
            self.root,
            self.data_dir,
            self.quarantine_dir,
            self.inbox_dir,
            self.features_dir,
            self.registry_dir,
            self.runs_dir,
            self.deploy_dir,
            self.lock_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)
        return self

    def activate(self) -> Workspace:
        """Point process-wide tools at this workspace (``RECOPS_HOME``, ``BENTOML_HOME``)
        and create it.

        BentoML reads ``BENTOML_HOME`` once, at its store's first use, and offers no
        public way to move it afterwards: a process that already used BentoML for another
        workspace builds bentos in a child process (``components.deploy.bento``).
        """
        self.ensure()
        os.environ[DEFAULT_ROOT_ENV] = str(self.root)
        os.environ["BENTOML_HOME"] = str(self.bentoml_home)
        self.bentoml_home.mkdir(parents=True, exist_ok=True)
        return self
