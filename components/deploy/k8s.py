"""The Kubernetes target: render the manifests for a bento image and check them.

Templates live in ``infra/k8s/`` (``string.Template`` placeholders); rendered files go
to ``deploy.k8s_output_dir`` or ``workspace.deploy_dir/k8s``. No cluster is contacted:
:func:`validate_manifests` parses every document and checks the fields a cluster would
reject or that this project relies on (GPU request, probes on ``/readyz``/``/healthz``,
selector matching the pod labels, the Service targeting the container port).

Deployment modes (``deploy.mode``): ``replace`` renders the champion's Deployment and
Service; ``shadow`` and ``canary`` (:func:`render_challenger`) add the challenger's own
Deployment and Service (``challenger.yaml``, pods labelled apart so the champion's
selectors never match them) and an Istio ``VirtualService`` on the champion's host that
mirrors to the challenger (shadow, ``mirrorPercentage``) or splits by weight (canary,
``deploy.challenger.share``), checked by :func:`validate_challenger`. A replace render
removes the challenger files from the output folder, so ``kubectl apply -f`` of it no
longer applies them (deleting them from a cluster is ``kubectl delete``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

from components.deploy.config import BentoBuildConfig, KubernetesDeployConfig, ServeConfig
from components.errors import DeployFailed
from components.workspace import Workspace

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "infra" / "k8s"
TEMPLATES = ("deployment.yaml", "service.yaml")
CHALLENGER_FILE = "challenger.yaml"
VIRTUAL_SERVICE_FILE = "virtualservice.yaml"
ISTIO_API = "networking.istio.io/"
APP_NAME = "recops-recommender"
GPU_RESOURCE = "nvidia.com/gpu"


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
    for stale in (CHALLENGER_FILE, VIRTUAL_SERVICE_FILE):  # a replace ends shadow/canary
        (out / stale).unlink(missing_ok=True)
    validate_manifests(files, expect_gpu=deploy_cfg.gpu, api_key_env=serve_cfg.api_key_env)
    return RenderedManifests(directory=out, files=files, image=values["image"])


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
        _check_weights(routes[-1], challenger, deploy_cfg.challenger.share)


def _check_mirror(route: dict[str, Any], challenger: str, share: float) -> None:
    if route.get("mirror", {}).get("host") != challenger:
        raise DeployFailed(f"shadow: the route does not mirror to {challenger}")
    dests = [d["destination"]["host"] for d in route.get("route", [])]
    if dests != [APP_NAME]:
        raise DeployFailed(f"shadow: clients must be answered by {APP_NAME} only, not {dests}")
    percent = float(route.get("mirrorPercentage", {}).get("value", 100.0))
    if abs(percent - share * 100) > 0.05:
        raise DeployFailed(f"shadow: mirrors {percent}% of requests, config says {share:.1%}")


def _check_weights(route: dict[str, Any], challenger: str, share: float) -> None:
    weights = {d["destination"]["host"]: int(d.get("weight", 0)) for d in route.get("route", [])}
    if set(weights) != {APP_NAME, challenger} or sum(weights.values()) != 100:
        raise DeployFailed(f"canary: weights {weights} must split 100 between the two arms")
    if weights[challenger] != round(share * 100):
        raise DeployFailed(
            f"canary: the challenger gets {weights[challenger]}%, config says {share:.0%}"
        )


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
