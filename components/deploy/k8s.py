"""The Kubernetes target: render the manifests for a bento image and check them.

Templates live in ``infra/k8s/`` (``string.Template`` placeholders); rendered files go
to ``deploy.k8s_output_dir`` or ``workspace.deploy_dir/k8s``. No cluster is contacted:
:func:`validate_manifests` parses every document and checks the fields a cluster would
reject or that this project relies on (GPU request, probes on ``/readyz``/``/healthz``,
selector matching the pod labels, the Service targeting the container port).

Deployment modes (``deploy.mode``): ``replace`` renders the champion's Deployment,
Service and the workspace claim both arms mount as ``RECOPS_HOME`` (their serving logs,
under the same request ids, are what ``recops deploy compare`` reads from
``deploy.k8s_serving_log_dir``); ``shadow`` and ``canary`` (:func:`render_challenger`) add
the challenger's own Deployment and Service (``challenger.yaml``, pods labelled apart so
the champion's selectors never match them) and an Istio ``VirtualService`` on the
champion's host that mirrors to the challenger (shadow, ``mirrorPercentage``) or routes a
sticky share of *users* to it (canary: a header match on the user's bucket
``x-recops-bucket``, see ``infra/k8s/virtualservice-canary.yaml`` for why not weights),
checked by :func:`validate_challenger` and recorded in ``k8s-challenger.json``. Concluding
or replacing renders the champion-only VirtualService over it and moves the challenger's
manifests to ``retired/`` (:func:`retire_challenger`: ``kubectl apply -f`` the folder,
``kubectl delete -f`` retired/).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from string import Template
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from components.deploy.config import BentoBuildConfig, KubernetesDeployConfig, ServeConfig
from components.errors import DeployFailed
from components.workspace import Workspace

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "infra" / "k8s"
TEMPLATES = ("deployment.yaml", "service.yaml", "workspace-pvc.yaml")
CHALLENGER_FILE = "challenger.yaml"
VIRTUAL_SERVICE_FILE = "virtualservice.yaml"
RETIRED_DIR = "retired"  # the challenger's manifests after it ended: kubectl delete -f
RECORD_FILE = "k8s-challenger.json"  # in the workspace's deploy dir, never in the output
ISTIO_API = "networking.istio.io/"
APP_NAME = "recops-recommender"
GPU_RESOURCE = "nvidia.com/gpu"
WORKSPACE_MOUNT = "/var/lib/recops"  # RECOPS_HOME in both arms' pods (a shared claim)
BUCKET_HEADER = "x-recops-bucket"
BUCKETS = 100


class ChallengerRecord(BaseModel):
    """A shadow or canary rendered for Kubernetes (``k8s-challenger.json``): what
    ``recops deploy compare``/``conclude`` need without a cluster."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["shadow", "canary"]
    version: str
    champion: str
    bento_tag: str
    started_at: datetime
    directory: str


@dataclass(frozen=True)
class RenderedManifests:
    directory: Path
    files: list[Path]
    image: str


def image_for(bento_tag: str, deploy_cfg: BentoBuildConfig) -> str:
    """``deploy.image`` or the tag ``bentoml containerize <bento_tag>`` produces."""
    return deploy_cfg.image or bento_tag


def _output_dir(workspace: Workspace, deploy_cfg: KubernetesDeployConfig) -> Path:
    out = (
        Path(deploy_cfg.k8s_output_dir)
        if deploy_cfg.k8s_output_dir
        else workspace.deploy_dir / "k8s"
    )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _values(
    version: str, bento_tag: str, serve_cfg: ServeConfig, deploy_cfg: KubernetesDeployConfig
) -> dict[str, str]:
    return {
        "name": APP_NAME,
        "challenger": f"{APP_NAME}-challenger",
        "namespace": deploy_cfg.k8s_namespace,
        "replicas": str(deploy_cfg.k8s_replicas),
        "image": image_for(bento_tag, deploy_cfg),
        "model_version": version,
        "api_key_env": serve_cfg.api_key_env,
        "gpu_limit": f"              {GPU_RESOURCE}: 1" if deploy_cfg.gpu else "",
        "workspace_mount": WORKSPACE_MOUNT,
        "workspace_size": deploy_cfg.k8s_workspace_size,
    }


def _write(template: str, out: Path, name: str, values: dict[str, str]) -> Path:
    path = out / name
    path.write_text(Template((TEMPLATE_DIR / template).read_text()).substitute(values))
    return path


def render_manifests(
    workspace: Workspace,
    version: str,
    bento_tag: str,
    serve_cfg: ServeConfig,
    deploy_cfg: KubernetesDeployConfig,
) -> RenderedManifests:
    """Fill the templates for ``version`` and write them; validated before returning."""
    out = _output_dir(workspace, deploy_cfg)
    values = _values(version, bento_tag, serve_cfg, deploy_cfg)
    files = [_write(name, out, name, values) for name in TEMPLATES]
    if (out / VIRTUAL_SERVICE_FILE).exists():  # a replace ends a shadow/canary
        files.append(retire_challenger(out, values))
    validate_manifests(files, expect_gpu=deploy_cfg.gpu, api_key_env=serve_cfg.api_key_env)
    return RenderedManifests(directory=out, files=files, image=values["image"])


def retire_challenger(out: Path, values: dict[str, str]) -> Path:
    """The mesh routes to the champion alone again: ``virtualservice.yaml`` rendered
    without mirror or canary route (applying the folder overwrites the mode's), and the
    challenger's Deployment + Service moved to ``retired/`` (``kubectl delete -f``)."""
    challenger = out / CHALLENGER_FILE
    if challenger.exists():
        (out / RETIRED_DIR).mkdir(exist_ok=True)
        os.replace(challenger, out / RETIRED_DIR / CHALLENGER_FILE)
    path = _write("virtualservice-replace.yaml", out, VIRTUAL_SERVICE_FILE, values)
    routes = _require(_load_documents([path])[0], "spec.http")
    if len(routes) != 1 or [d["destination"]["host"] for d in routes[0]["route"]] != [APP_NAME]:
        raise DeployFailed(f"the retired VirtualService must route to {APP_NAME} alone")
    return path


def retire_rendered(
    workspace: Workspace, serve_cfg: ServeConfig, deploy_cfg: KubernetesDeployConfig
) -> Path:
    """:func:`retire_challenger` in the configured output folder; the VirtualService."""
    out = _output_dir(workspace, deploy_cfg)
    values = _values("", "", serve_cfg, deploy_cfg)
    return retire_challenger(out, values)


def bucket_regex(share: float) -> str:
    """The ``x-recops-bucket`` values (00-99) that go to a canary of ``share``."""
    n = round(share * BUCKETS)
    return "^(" + "|".join(f"{b:02d}" for b in range(n)) + ")$"


def save_record(workspace: Workspace, record: ChallengerRecord) -> None:
    path = workspace.deploy_dir / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(record.model_dump_json(indent=2))
    os.replace(tmp, path)


def read_record(workspace: Workspace) -> ChallengerRecord | None:
    """The rendered challenger, None when there is none."""
    path = workspace.deploy_dir / RECORD_FILE
    try:
        return ChallengerRecord.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise DeployFailed(f"the Kubernetes challenger record {path} is unreadable") from exc


def clear_record(workspace: Workspace) -> None:
    (workspace.deploy_dir / RECORD_FILE).unlink(missing_ok=True)


def render_challenger(
    workspace: Workspace,
    version: str,
    bento_tag: str,
    mode: str,
    serve_cfg: ServeConfig,
    deploy_cfg: KubernetesDeployConfig,
) -> RenderedManifests:
    """The challenger's Deployment + Service and the Istio VirtualService for ``mode``
    (shadow: mirror; canary: weights), written beside the champion's and validated."""
    out = _output_dir(workspace, deploy_cfg)
    c = deploy_cfg.challenger
    challenger_weight = round(c.share * 100)
    values = {
        **_values(version, bento_tag, serve_cfg, deploy_cfg),
        "mode": mode,
        "percent": f"{c.mirror_share * 100:.1f}",
        "timeout_s": f"{serve_cfg.timeout_s}",
        "champion_weight": str(100 - challenger_weight),
        "challenger_weight": str(challenger_weight),
        "bucket_regex": bucket_regex(c.share),
    }
    files = [
        _write(CHALLENGER_FILE, out, CHALLENGER_FILE, values),
        _write(f"virtualservice-{mode}.yaml", out, VIRTUAL_SERVICE_FILE, values),
    ]
    validate_manifests(files[:1], expect_gpu=deploy_cfg.gpu, api_key_env=serve_cfg.api_key_env)
    validate_challenger(files, mode, deploy_cfg)
    return RenderedManifests(directory=out, files=files, image=values["image"])


def validate_challenger(paths: list[Path], mode: str, deploy_cfg: BentoBuildConfig) -> None:
    """The mode's routing is what the config asks: the VirtualService is on the champion's
    host, mirrors to the challenger's Service (shadow) or splits by weights summing to 100
    with the challenger's share (canary); the challenger's pods are not the champion's."""
    docs = _load_documents(paths)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(str(doc.get("kind")), []).append(doc)
    services = {_require(d, "metadata.name") for d in by_kind.get("Service", [])}
    (vs,) = by_kind.get("VirtualService", [None]) or [None]
    if vs is None or not str(vs.get("apiVersion", "")).startswith(ISTIO_API):
        raise DeployFailed("no Istio VirtualService among the challenger manifests")
    challenger = f"{APP_NAME}-challenger"
    if challenger not in services:
        raise DeployFailed(f"no Service {challenger} for the challenger")
    dep = next(iter(by_kind.get("Deployment", [])), None)
    if (
        dep is None
        or _require(dep, "spec.selector.matchLabels").get("app.kubernetes.io/name") != challenger
    ):
        raise DeployFailed("the challenger Deployment must select its own pods only")
    if APP_NAME not in _require(vs, "spec.hosts"):
        raise DeployFailed(f"the VirtualService does not route the champion's host {APP_NAME}")
    routes = _require(vs, "spec.http")
    if mode == "shadow":
        _check_mirror(routes[-1], challenger, deploy_cfg.challenger.mirror_share)
    else:
        _check_sticky_canary(routes, challenger, deploy_cfg.challenger.share)


def _routed_buckets(route: dict[str, Any]) -> set[int]:
    """The buckets (0-99) whose ``x-recops-bucket`` header this route's match takes."""
    taken: set[int] = set()
    for match in route.get("match") or []:
        spec = (match.get("headers") or {}).get(BUCKET_HEADER)
        if spec is None:
            continue
        pattern = spec.get("regex")
        if pattern is None:
            raise DeployFailed(f"canary: match {BUCKET_HEADER} by regex, not {sorted(spec)}")
        taken |= {b for b in range(BUCKETS) if re.fullmatch(pattern, f"{b:02d}")}
    return taken


def _check_sticky_canary(routes: list[dict[str, Any]], challenger: str, share: float) -> None:
    """Users, not requests: the challenger gets exactly the buckets below the share, by
    header match; no route splits by weight; the default route is the champion alone."""
    if any(len(r.get("route", [])) > 1 for r in routes):
        raise DeployFailed("canary: weights split requests, not users; route by bucket header")
    to_challenger = [r for r in routes if r["route"][0]["destination"]["host"] == challenger]
    buckets = set().union(*(_routed_buckets(r) for r in to_challenger)) if to_challenger else set()
    wanted = set(range(round(share * BUCKETS)))
    if buckets != wanted:
        raise DeployFailed(
            f"canary: buckets {sorted(buckets)[:5]}... ({len(buckets)}) go to the challenger, "
            f"config says the {len(wanted)} below {share:.0%}"
        )
    default = routes[-1]
    if default.get("match") or default["route"][0]["destination"]["host"] != APP_NAME:
        raise DeployFailed(f"canary: requests without a bucket must go to {APP_NAME}")


def _check_mirror(route: dict[str, Any], challenger: str, share: float) -> None:
    if route.get("mirror", {}).get("host") != challenger:
        raise DeployFailed(f"shadow: the route does not mirror to {challenger}")
    dests = [d["destination"]["host"] for d in route.get("route", [])]
    if dests != [APP_NAME]:
        raise DeployFailed(f"shadow: clients must be answered by {APP_NAME} only, not {dests}")
    percent = float(route.get("mirrorPercentage", {}).get("value", 100.0))
    if abs(percent - share * 100) > 0.05:
        raise DeployFailed(f"shadow: mirrors {percent}% of requests, config says {share:.1%}")


def _load_documents(paths: list[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            raise DeployFailed(f"{path.name}: not valid YAML ({exc.__class__.__name__})") from exc
        for doc in loaded:
            if not isinstance(doc, dict):
                raise DeployFailed(f"{path.name}: a manifest must be a mapping")
            docs.append(doc)
    return docs


def _require(doc: dict[str, Any], dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if isinstance(node, list):
            node = node[0] if node else None
        if not isinstance(node, dict) or part not in node:
            raise DeployFailed(f"{doc.get('kind', '?')} manifest is missing {dotted}")
        node = node[part]
    return node


def _check_api_key_secret(container: dict[str, Any], api_key_env: str) -> None:
    """The API key comes from a Secret the pod cannot start without (an optional Secret
    would let a pod serve without authentication when the Secret is missing)."""
    env = {e.get("name"): e for e in container.get("env") or [] if isinstance(e, dict)}
    ref = (env.get(api_key_env) or {}).get("valueFrom", {}).get("secretKeyRef")
    if not ref:
        raise DeployFailed(f"the container does not read ${api_key_env} from a Secret")
    if ref.get("optional", False):
        raise DeployFailed(f"the Secret holding ${api_key_env} must not be optional")


def _check_shared_workspace(dep: dict[str, Any], container: dict[str, Any]) -> None:
    """RECOPS_HOME is a mount of the claim both arms share (their serving logs are what
    ``recops deploy compare`` reads)."""
    env = {e.get("name"): e.get("value") for e in container.get("env") or []}
    mounts = {m.get("mountPath"): m.get("name") for m in container.get("volumeMounts") or []}
    volume = mounts.get(env.get("RECOPS_HOME"))
    claims = {
        v.get("name"): (v.get("persistentVolumeClaim") or {}).get("claimName")
        for v in dep["spec"]["template"]["spec"].get("volumes") or []
    }
    if volume is None or claims.get(volume) != f"{APP_NAME}-workspace":
        raise DeployFailed(
            f"RECOPS_HOME must be a mount of the shared claim {APP_NAME}-workspace "
            "(both arms' serving logs)"
        )


def validate_manifests(
    paths: list[Path], expect_gpu: bool = True, api_key_env: str | None = None
) -> None:
    """Structural checks a cluster (or this project) needs; DeployFailed names the first gap.

    With ``api_key_env`` the container must read it from a required Secret."""
    docs = _load_documents(paths)
    kinds = {d.get("kind"): d for d in docs}
    for kind in ("Deployment", "Service"):
        if kind not in kinds:
            raise DeployFailed(f"no {kind} among the rendered manifests")
    for doc in docs:
        for field in ("apiVersion", "kind", "metadata.name"):
            _require(doc, field)
    dep, svc = kinds["Deployment"], kinds["Service"]
    selector = _require(dep, "spec.selector.matchLabels")
    pod_labels = _require(dep, "spec.template.metadata.labels")
    if any(pod_labels.get(k) != v for k, v in selector.items()):
        raise DeployFailed("Deployment selector does not match its pod labels")
    containers = _require(dep, "spec.template.spec.containers")
    if not containers:
        raise DeployFailed("Deployment has no containers")
    container = containers[0]
    for field in ("name", "image", "ports"):
        _require(container, field)
    if _require(container, "readinessProbe.httpGet.path") != "/readyz":
        raise DeployFailed("the readiness probe must call /readyz")
    if _require(container, "livenessProbe.httpGet.path") != "/healthz":
        raise DeployFailed("the liveness probe must call /healthz")
    if api_key_env is not None:
        _check_api_key_secret(container, api_key_env)
    _check_shared_workspace(dep, container)
    limits = container.get("resources", {}).get("limits", {}) or {}
    if expect_gpu and int(limits.get(GPU_RESOURCE, 0)) < 1:
        raise DeployFailed(f"the container does not request {GPU_RESOURCE}")
    if any(svc_sel := _require(svc, "spec.selector")) and any(
        pod_labels.get(k) != v for k, v in svc_sel.items()
    ):
        raise DeployFailed("Service selector does not match the Deployment's pods")
    port_names = {p.get("name") for p in container["ports"]}
    port_numbers = {p.get("containerPort") for p in container["ports"]}
    for port in _require(svc, "spec.ports"):
        target = port.get("targetPort", port.get("port"))
        if target not in port_names and target not in port_numbers:
            raise DeployFailed(f"Service targetPort {target!r} is not a container port")
