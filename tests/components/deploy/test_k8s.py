"""Rendering and validating the Kubernetes manifests (no cluster needed)."""

from __future__ import annotations

import pytest
import yaml

from components.deploy.config import KubernetesDeployConfig, ServeConfig
from components.deploy.k8s import render_manifests, validate_manifests
from components.errors import DeployFailed
from components.workspace import Workspace


def test_rendered_manifests_request_a_gpu_and_probe_readyz(tmp_path) -> None:
    ws = Workspace.at(tmp_path).ensure()
    out = render_manifests(
        ws,
        "v123",
        "recops-recommender:abc",
        ServeConfig(),
        KubernetesDeployConfig(target="k8s", k8s_replicas=3, k8s_namespace="recs"),
    )
    docs = {d["kind"]: d for p in out.files for d in yaml.safe_load_all(p.read_text())}
    dep = docs["Deployment"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert out.directory == ws.deploy_dir / "k8s"
    assert dep["metadata"]["namespace"] == "recs" and dep["spec"]["replicas"] == 3
    assert container["image"] == "recops-recommender:abc"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert dep["metadata"]["labels"]["recops/model-version"] == "v123"
    assert docs["Service"]["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_cpu_only_deployment_has_no_gpu_limit(tmp_path) -> None:
    ws = Workspace.at(tmp_path).ensure()
    out = render_manifests(
        ws,
        "v1",
        "img:1",
        ServeConfig(),
        KubernetesDeployConfig(target="k8s", gpu=False, image="reg/x:1"),
    )
    dep = yaml.safe_load(out.files[0].read_text())
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["image"] == "reg/x:1"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"][
                "httpGet"
            ].update(path="/"),
            "readiness probe",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].pop(
                "nvidia.com/gpu"
            ),
            "nvidia.com/gpu",
        ),
        (
            lambda d: d["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/name": "x"}),
            "selector",
        ),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("image"), "image"),
    ],
)
def test_validation_names_the_broken_field(tmp_path, edit, message) -> None:
    ws = Workspace.at(tmp_path).ensure()
    out = render_manifests(ws, "v1", "img:1", ServeConfig(), KubernetesDeployConfig(target="k8s"))
    dep = yaml.safe_load(out.files[0].read_text())
    edit(dep)
    out.files[0].write_text(yaml.safe_dump(dep))
    with pytest.raises(DeployFailed, match=message):
        validate_manifests(out.files)


def test_the_api_key_secret_is_required_not_optional(tmp_path) -> None:
    ws = Workspace.at(tmp_path).ensure()
    out = render_manifests(ws, "v1", "img:1", ServeConfig(), KubernetesDeployConfig(target="k8s"))
    dep = yaml.safe_load(out.files[0].read_text())
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    (key,) = [e for e in env if e["name"] == "RECOPS_API_KEY"]
    assert key["valueFrom"]["secretKeyRef"]["optional"] is False
    # an edited manifest that makes the Secret optional (or drops it) is refused
    key["valueFrom"]["secretKeyRef"]["optional"] = True
    out.files[0].write_text(yaml.safe_dump(dep))
    with pytest.raises(DeployFailed, match="must not be optional"):
        validate_manifests(out.files, api_key_env="RECOPS_API_KEY")
    env.remove(key)
    out.files[0].write_text(yaml.safe_dump(dep))
    with pytest.raises(DeployFailed, match="from a Secret"):
        validate_manifests(out.files, api_key_env="RECOPS_API_KEY")


def _k8s(**challenger: float) -> KubernetesDeployConfig:
    from components.deploy.config import ChallengerConfig

    return KubernetesDeployConfig(
        target="k8s",
        gpu=False,
        challenger=ChallengerConfig(**challenger),  # type: ignore[arg-type]
    )


def test_shadow_renders_a_second_deployment_and_an_istio_mirror(tmp_path) -> None:
    from components.deploy.k8s import render_challenger

    ws = Workspace.at(tmp_path).ensure()
    champion = render_manifests(ws, "v1", "img:1", ServeConfig(), _k8s())
    out = render_challenger(ws, "v2", "img:2", "shadow", ServeConfig(), _k8s(mirror_share=0.5))
    docs = [d for p in out.files for d in yaml.safe_load_all(p.read_text())]
    kinds = {d["kind"]: d for d in docs}
    dep, vs = kinds["Deployment"], kinds["VirtualService"]
    assert dep["metadata"]["name"] == "recops-recommender-challenger"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "img:2"
    assert dep["metadata"]["labels"]["recops/model-version"] == "v2"
    # the champion's selectors never match the challenger's pods
    champion_dep = yaml.safe_load(champion.files[0].read_text())
    selector = champion_dep["spec"]["selector"]["matchLabels"]
    pod = dep["spec"]["template"]["metadata"]["labels"]
    assert any(pod.get(k) != v for k, v in selector.items())
    route = vs["spec"]["http"][-1]
    assert vs["spec"]["hosts"] == ["recops-recommender"]
    assert route["mirror"]["host"] == "recops-recommender-challenger"
    assert route["mirrorPercentage"]["value"] == 50.0
    assert [d["destination"]["host"] for d in route["route"]] == ["recops-recommender"]
    # a replace render takes the mode's routing out of the mesh (a champion-only
    # VirtualService over the mirror) and the challenger's manifests out of the folder
    render_manifests(ws, "v2", "img:2", ServeConfig(), _k8s())
    assert sorted(p.name for p in out.directory.iterdir()) == [
        "deployment.yaml",
        "retired",
        "service.yaml",
        "virtualservice.yaml",
        "workspace-pvc.yaml",
    ]
    plain = yaml.safe_load((out.directory / "virtualservice.yaml").read_text())
    assert "mirror" not in plain["spec"]["http"][0]
    assert (out.directory / "retired" / "challenger.yaml").exists()


def test_the_canary_routes_users_by_bucket_header_and_a_wrong_split_is_refused(tmp_path) -> None:
    """Istio weights would split requests; the canary takes the users whose bucket header
    is below the share, and the validation counts the buckets the regex matches."""
    from components.deploy.k8s import render_challenger, validate_challenger

    ws = Workspace.at(tmp_path).ensure()
    cfg = _k8s(share=0.2)
    out = render_challenger(ws, "v2", "img:2", "canary", ServeConfig(), cfg)
    vs_path = out.directory / "virtualservice.yaml"
    vs = yaml.safe_load(vs_path.read_text())
    routes = vs["spec"]["http"]
    to_challenger = [r for r in routes if "bucket" in str(r.get("match"))]
    assert len(to_challenger) == 1
    assert to_challenger[0]["route"] == [
        {"destination": {"host": "recops-recommender-challenger", "port": {"number": 80}}}
    ]
    assert routes[-1] == {
        "route": [{"destination": {"host": "recops-recommender", "port": {"number": 80}}}]
    }
    buckets = to_challenger[0]["match"][1]["headers"]["x-recops-bucket"]["regex"]
    assert buckets == "^(" + "|".join(f"{b:02d}" for b in range(20)) + ")$"
    for edit, message in [
        ("^(0[0-9]|1[0-9]|2[0-9])$", "30"),  # 30 buckets for a 20 % canary
        (None, "weights split requests"),  # back to a weighted split
    ]:
        broken = yaml.safe_load(vs_path.read_text())
        if edit is None:
            broken["spec"]["http"][-1]["route"] = [
                {"destination": {"host": "recops-recommender"}, "weight": 80},
                {"destination": {"host": "recops-recommender-challenger"}, "weight": 20},
            ]
        else:
            broken["spec"]["http"][1]["match"][1]["headers"]["x-recops-bucket"]["regex"] = edit
        vs_path.write_text(yaml.safe_dump(broken))
        with pytest.raises(DeployFailed, match=message):
            validate_challenger(out.files, "canary", cfg)
    with pytest.raises(DeployFailed, match="mirror"):
        validate_challenger(out.files, "shadow", cfg)


def test_both_arms_must_mount_the_shared_workspace(tmp_path) -> None:
    """compare reads both arms' serving logs from the claim they share: a Deployment
    whose RECOPS_HOME is not a mount of it is refused."""
    ws = Workspace.at(tmp_path).ensure()
    out = render_manifests(ws, "v1", "img:1", ServeConfig(), _k8s())
    dep = yaml.safe_load(out.files[0].read_text())
    dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "x"
    out.files[0].write_text(yaml.safe_dump(dep))
    with pytest.raises(DeployFailed, match="shared claim"):
        validate_manifests(out.files)
