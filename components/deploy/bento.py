"""Build the recommendation bento for one registered model version.

The bento carries the service code (``services/``), the library it imports
(``components/``), the Feast declarations (``feature_repo/``), the model (declared by the
service as a ``BentoModel``, so BentoML copies it in), Python requirements pinned to the
versions installed here, and Docker options for a CUDA base image (``bentoml
containerize``). The version, model name, data version and headline metrics travel as
bento labels and as the service's bento arguments (see ``services/settings.py``).

Only public BentoML APIs: the registered model is copied into the workspace's BentoML
model store with ``bentoml.models.create`` (so the service's ``BentoModel`` resolves and
the bento carries it), then ``bentoml.bentos.build_bentofile`` builds. BentoML binds a
process to one store (``BENTOML_HOME`` at first use); when this process is bound to
another workspace's store, the build runs in a child process
(``python -m components.deploy.bento``) with the right ``BENTOML_HOME``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from components.data.config import EVENT_TYPES
from components.deploy.auth import decide_auth
from components.deploy.config import BentoBuildConfig, ServeConfig
from components.errors import (
    DeployFailed,
    RecopsError,
    StorageFull,
    full_disk_is_one_line,
    storage_full,
)
from components.features.config import FeaturesConfig
from components.workspace import Workspace

if TYPE_CHECKING:
    from components.registry.store import ModelVersion

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_IMPORT = "services.recommender:RecommendationService"
BENTO_NAME = "recops-recommender"
INCLUDE = [
    "services/**/*.py",
    "components/**/*.py",
    "feature_repo/**/*.py",
    "feature_repo/**/*.yaml",
]
EXCLUDE = ["**/__pycache__", "**/*.pyc", "tests/"]
# Distributions the service imports at run time (pinned to what is installed here).
RUNTIME_PACKAGES = [
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "filelock",
    "feast",
    "bentoml",
    "httpx",
    "orjson",
    "scipy",
    "lightning",
    "prometheus-client",
    "faiss-cpu",
    # serve.scorer=onnx (the pyproject's serving extra); a build machine without them
    # leaves them unpinned, and a bento without them serves the frozen trace
    "onnxruntime",
    "onnx",
]


@dataclass(frozen=True)
class BuiltBento:
    """A bento in the workspace's BentoML store."""

    tag: str
    version: str  # the model version it pins
    path: Path
    args: dict[str, object] = field(default_factory=dict)  # its bento arguments
    model_path: str = ""  # the model's folder in the workspace's BentoML store


def pinned_requirements(packages: list[str] = RUNTIME_PACKAGES) -> list[str]:
    """``name==version`` for each installed distribution (missing ones left unpinned)."""
    out = []
    for name in packages:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def service_args(
    workspace: Workspace,
    model: ModelVersion,
    serve_cfg: ServeConfig,
    features_cfg: FeaturesConfig,
    auth_required: bool = False,
) -> dict[str, object]:
    """Bento arguments for ``services.settings.ServiceSettings`` (JSON-serialisable).

    Secrets travel as references only: ``serve`` names the API key's variable or file,
    and the features config serialises its connection settings redacted."""
    metrics = {k: float(v) for k, v in model.record.metrics_test.items()}
    return {
        "event_types": recorded_event_types(model),
        "model_tag": model.tag,
        "model_version": model.version,
        "model_name": model.model_name,
        "data_version": model.record.data_version,
        "metrics": metrics,
        "workspace": str(workspace.root),
        "auth_required": auth_required,
        "serve": serve_cfg.model_dump(mode="json"),
        "features": features_cfg.model_dump(mode="json"),
    }


def recorded_event_types(model: ModelVersion) -> list[str]:
    """The event types of the validation config ``model`` was trained and deployed under
    (its run record), so the bento accepts the feedback that config's ingest accepts;
    the default list when the record predates or lacks one."""
    validation = model.record.config.get("validation") or {}
    recorded = validation.get("event_types") if isinstance(validation, dict) else None
    return [str(t) for t in recorded] if recorded else list(EVENT_TYPES)


def bento_labels(model: ModelVersion) -> dict[str, str]:
    """Labels on the bento: what it serves and how good it was (strings only)."""
    from components.evaluation.metrics import HEADLINE_METRICS  # torch: only when building

    labels = {
        "recops": "recommender",
        "model_version": model.version,
        "model_name": model.model_name,
        "data_version": model.record.data_version or "none",
    }
    for name in HEADLINE_METRICS:
        value = model.record.metrics_test.get(name)
        if value is not None:
            labels[name.replace("@", "_at_")] = f"{value:.6f}"
    return labels


def docker_options(deploy_cfg: BentoBuildConfig) -> dict[str, object]:
    """``bentoml containerize`` base: Debian + CUDA runtime when the deployment wants a GPU."""
    options: dict[str, object] = {
        "distro": "debian",
        "python_version": "3.11",
        "system_packages": ["libgomp1"],
    }
    if deploy_cfg.gpu:
        options["cuda_version"] = deploy_cfg.cuda_version
    return options


def write_bentofile(
    workspace: Workspace, model: ModelVersion, deploy_cfg: BentoBuildConfig
) -> Path:
    """Write ``deploy_dir/bentofiles/<version>.yaml`` (kept: it documents the build)."""
    spec = {
        "service": SERVICE_IMPORT,
        "name": BENTO_NAME,
        "description": f"recops recommender serving {model.model_name} {model.version}",
        "labels": bento_labels(model),
        "include": INCLUDE,
        "exclude": EXCLUDE,
        "python": {"packages": pinned_requirements(), "lock_packages": False},
        "docker": docker_options(deploy_cfg),
    }
    path = workspace.deploy_dir / "bentofiles" / f"{model.version}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def build_bento(
    workspace: Workspace,
    version: str,
    serve_cfg: ServeConfig,
    deploy_cfg: BentoBuildConfig,
    features_cfg: FeaturesConfig,
    auth_required: bool | None = None,
) -> BuiltBento:
    """Build (into ``workspace.bentoml_home``) the bento serving registered ``version``.

    ``auth_required`` is recorded in the bento (default: decided from ``serve_cfg`` alone,
    see :func:`components.deploy.auth.decide_auth`). Raises :class:`DeployFailed` when the
    version is unknown or BentoML refuses the build.
    """
    from components.registry.store import ModelRegistry

    if auth_required is None:
        auth_required = decide_auth(serve_cfg)
    workspace.activate()
    for sub in ("tmp", "bentos", "models"):  # BentoML creates these only for its default home
        (workspace.bentoml_home / sub).mkdir(parents=True, exist_ok=True)
    try:
        model = ModelRegistry(workspace).get(version)
    except RecopsError as exc:
        raise DeployFailed(f"cannot build a bento for {version}: {exc}") from exc
    with full_disk_is_one_line():  # exit 12 and "free disk space", not "the build failed"
        job = BuildJob(
            bentofile=str(write_bentofile(workspace, model, deploy_cfg)),
            args=service_args(workspace, model, serve_cfg, features_cfg, auth_required),
            model_tag=model.tag,
            model_dir=model.path,
            home=str(workspace.bentoml_home.resolve()),
            ann=serve_cfg.ann,
            ann_min_items=serve_cfg.ann_min_items,
        )
        tag, path, model_path = _build(job, model.version)
    log.info("built bento %s for model %s", tag, model.version)
    return BuiltBento(
        tag=tag, version=model.version, path=Path(path), args=job.args, model_path=model_path
    )


@dataclass(frozen=True)
class BuildJob:
    """Everything one bento build needs, JSON-serialisable (it may cross a process)."""

    bentofile: str
    args: dict[str, object]
    model_tag: str
    model_dir: str
    home: str  # the BentoML home the bento must land in
    ann: str = "off"  # serve.ann: build the approximate top-k index (components/models/ann.py)
    ann_min_items: int = 0


def _build(job: BuildJob, version: str) -> tuple[str, str, str]:
    """``(bento tag, bento path, stored model path)``."""
    try:
        stored = import_model(job)
        return (*run_build(job), stored) if stored is not None else build_in_child(job)
    except (DeployFailed, StorageFull):
        raise
    except Exception as exc:  # BentoML raises many types; the user needs one line
        if storage_full(exc) is not None:
            raise
        log.exception("bento build failed")
        raise DeployFailed(f"bento build for {version} failed: {exc}".splitlines()[0]) from exc


def import_model(job: BuildJob) -> str | None:
    """Put the registered model (and, per ``job.ann``, its approximate top-k index) into
    this process's BentoML model store; its folder there, or None when that store is not
    ``job.home`` (this process is bound to another workspace)."""
    import bentoml
    from bentoml.exceptions import NotFound

    from components.registry.store import model_info

    try:
        found = bentoml.models.get(job.model_tag)
        if not same_files(Path(job.model_dir), Path(found.path)):  # torn by a full disk
            log.warning("BentoML's copy of %s is incomplete; copying it again", job.model_tag)
            bentoml.models.delete(job.model_tag)
            raise NotFound(job.model_tag)
    except NotFound:
        info = model_info(Path(job.model_dir))
        try:
            with bentoml.models.create(
                job.model_tag, labels=info.get("labels"), metadata=info.get("metadata")
            ) as created:
                shutil.copytree(job.model_dir, created.path, dirs_exist_ok=True)
        except BaseException:  # a full disk mid-save: keep no half model in the store
            name, _, version = job.model_tag.partition(":")
            shutil.rmtree(Path(job.home) / "models" / name / version, ignore_errors=True)
            raise
        found = bentoml.models.get(job.model_tag)
    if Path(found.path).resolve().is_relative_to(Path(job.home)):
        add_ann_index(Path(found.path), job.ann, job.ann_min_items)
        return str(found.path)
    log.info("BentoML in this process uses another store; building %s in a child", job.model_tag)
    return None


def add_ann_index(model_dir: Path, mode: str, min_items: int) -> None:
    """Write ``ann.faiss`` beside the stored model when ``mode`` is ``on``, or ``auto``
    and the catalogue has at least ``min_items`` items (once per model version)."""
    from components.models.ann import INDEX_FILE, write_index
    from components.models.bundle import ModelBundle

    if mode == "off" or (model_dir / INDEX_FILE).exists():
        return
    if mode == "auto" and bundle_items(model_dir) < min_items:
        return  # decided from bundle.json: loading the model costs seconds of a switch-over
    bundle = ModelBundle.load(model_dir, "cpu")
    if write_index(bundle.model, model_dir) is not None:
        log.info("approximate top-k index built for %d items", bundle.vocab.n_items)


def bundle_items(model_dir: Path) -> int:
    """The catalogue size a stored bundle records (``bundle.json``; 0 when unreadable)."""
    try:
        return int(json.loads((model_dir / "bundle.json").read_text())["n_items"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def same_files(source: Path, copy: Path) -> bool:
    """Whether ``copy`` has every file of ``source`` with the same size."""
    for path in source.rglob("*"):
        if path.is_file():
            twin = copy / path.relative_to(source)
            if not twin.is_file() or twin.stat().st_size != path.stat().st_size:
                return False
    return True


def run_build(job: BuildJob) -> tuple[str, str]:
    """``(bento tag, bento path)`` built in this process's BentoML store.

    The build context is a staging folder holding only the files ``INCLUDE`` names
    (:func:`stage_sources`), not the repository: BentoML walks every file of its build
    context and matches each against the include patterns, and a checkout's ``.venv``
    alone is ~100k files (about a second of every cold deploy)."""
    import bentoml

    # The service's package comes from the repository, as in the serve process: imported
    # here, BentoML's import of the service module finds it in sys.modules rather than in
    # the staging folder it puts first on sys.path (and deleted after the build).
    importlib.import_module(SERVICE_IMPORT.split(".", 1)[0])
    with tempfile.TemporaryDirectory(prefix="recops-build-context-") as context:
        stage_sources(Path(context))
        # reload=True: a process that built another version before has the service
        # module imported with that version's arguments (and model tag) baked in.
        bento = bentoml.bentos.build_bentofile(
            job.bentofile, build_ctx=context, args=job.args, reload=True
        )
    return str(bento.tag), str(bento.path)


def stage_sources(into: Path) -> int:
    """Copy the repository files the bentofile's ``INCLUDE`` patterns name into ``into``
    (same relative paths); the number of files copied."""
    copied = 0
    for pattern in INCLUDE:
        for source in REPO_ROOT.glob(pattern):
            if source.is_file() and "__pycache__" not in source.parts:
                target = into / source.relative_to(REPO_ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                copied += 1
    return copied


def build_in_child(job: BuildJob) -> tuple[str, str, str]:
    """:func:`run_build` in a child process whose ``BENTOML_HOME`` is ``job.home``."""
    env = {**os.environ, "BENTOML_HOME": job.home, "BENTOML_DO_NOT_TRACK": "true"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "components.deploy.bento", json.dumps(job.__dict__)],
        capture_output=True,
        text=True,
        cwd=str(REPO_ROOT),
        env=env,
        timeout=600,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode == StorageFull.exit_code:
        raise StorageFull(
            f"no space left on device building the bento for {job.model_tag}",
            hint="free disk space in the workspace and deploy again; the build kept nothing",
        )
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeployFailed(f"bento build in a child process failed: {tail}")
    answer = json.loads(lines[-1])
    return str(answer["tag"]), str(answer["path"]), str(answer["model_path"])


def main() -> None:
    """Child-process entry: build the :class:`BuildJob` given as JSON, print tag and path."""
    parser = argparse.ArgumentParser(description="build a recops bento (internal)")
    parser.add_argument("job", help="BuildJob as JSON")
    job = BuildJob(**json.loads(parser.parse_args().job))
    try:
        model_path = import_model(job)
        if model_path is None:
            raise SystemExit(f"BENTOML_HOME is not {job.home}")
        tag, path = run_build(job)
    except Exception as exc:
        if storage_full(exc) is None:
            raise
        print(f"no space left on device: {exc}", file=sys.stderr)
        raise SystemExit(StorageFull.exit_code) from exc
    print(json.dumps({"tag": tag, "path": path, "model_path": model_path}))


if __name__ == "__main__":
    main()
