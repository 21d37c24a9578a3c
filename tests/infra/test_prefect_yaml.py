"""prefect.yaml: valid for Prefect's own deployment-config schema, entrypoints that load
the real flows, crons Prefect parses, pull steps that really clone and cd, parameters
equal to configs/production.yaml; and `prefect deploy --all` against a real server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from components.config import config_from_mapping

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO_ROOT / "prefect.yaml"
BIN = Path(sys.executable).parent
EXPECTED = {
    "recops-retrain": ("flows/retrain.py:retrain_flow", "0 3 * * *"),
    "recops-materialize": ("flows/materialize.py:materialize_flow", "0 * * * *"),
}


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


def test_prefect_yaml_matches_prefects_deploy_schema(raw: dict) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(raw)  # raises on a schema error
    assert {d.name: d.entrypoint for d in model.deployments} == {
        name: entry for name, (entry, _) in EXPECTED.items()
    }
    for deployment in model.deployments:
        assert deployment.work_pool is not None and deployment.work_pool.name == "recops-process"
        assert [s.cron for s in deployment.schedules] == [EXPECTED[deployment.name][1]]
    steps = [next(iter(step)) for step in model.pull]
    assert steps == [
        "prefect.deployments.steps.git_clone",
        "prefect.deployments.steps.set_working_directory",
    ]


def test_crons_parse_and_fire_when_expected(raw: dict) -> None:
    from datetime import datetime, timezone

    from prefect.client.schemas.schedules import CronSchedule
    from prefect.server.schemas.schedules import CronSchedule as ServerCron

    start = datetime(2026, 1, 1, 0, 30, tzinfo=timezone.utc)
    firsts = {}
    for deployment in raw["deployments"]:
        (spec,) = deployment["schedules"]
        CronSchedule(cron=spec["cron"], timezone=spec["timezone"])  # what `prefect deploy` sends
        schedule = ServerCron(cron=spec["cron"], timezone=spec["timezone"])  # what the server runs
        firsts[deployment["name"]] = asyncio.run(schedule.get_dates(n=2, start=start))
    assert [d.hour for d in firsts["recops-retrain"]] == [3, 3]  # nightly at 03:00 UTC
    hourly = firsts["recops-materialize"]
    assert (hourly[1] - hourly[0]).total_seconds() == 3600


def test_entrypoints_load_the_real_flows_with_valid_parameters(raw: dict) -> None:
    from prefect.flows import load_flow_from_entrypoint

    production = yaml.safe_load((REPO_ROOT / "configs" / "production.yaml").read_text())
    for deployment in raw["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO_ROOT / deployment["entrypoint"]))
        assert flow.name == deployment["name"]
        flow.validate_parameters(deployment["parameters"])  # names and types
        assert deployment["parameters"]["config"] == production  # no drift between the two
        cfg = config_from_mapping(deployment["parameters"]["config"])  # as the flow does
        assert cfg.features.online_store == "redis" and cfg.train.strategy == "ddp"


def _repo_with_head_on_a_branch(path: Path) -> Path:
    """A repository whose branch ``ci-head`` is this checkout's HEAD commit.

    CI may check out a detached HEAD (no branch to name), so the clone is made from a
    branch created in a scratch repository, never in the checkout under test.
    """
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(
        ["git", "fetch", "-q", str(REPO_ROOT), "HEAD:refs/heads/ci-head"], cwd=path, check=True
    )
    return path


def test_pull_steps_clone_the_repo_and_enter_it(raw: dict, tmp_path: Path, monkeypatch) -> None:
    from prefect.deployments.steps.core import run_steps

    source = _repo_with_head_on_a_branch(tmp_path / "source")
    monkeypatch.setenv("RECOPS_GIT_URL", f"file://{source}")
    monkeypatch.setenv("RECOPS_GIT_BRANCH", "ci-head")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # git_clone clones into the working directory
    try:
        outputs = asyncio.run(run_steps(raw["pull"]))
        here = Path.cwd()
    finally:
        os.chdir(tmp_path)
    assert here.parent == work and (work / outputs["directory"]).resolve() == here
    for entry, _ in EXPECTED.values():
        assert (here / entry.split(":")[0]).is_file()


@pytest.mark.slow
def test_prefect_deploy_all_registers_both_deployments(prefect_server) -> None:
    api, env = prefect_server
    env = {
        **env,
        "RECOPS_GIT_URL": "https://git.example.com/recops.git",
        "RECOPS_GIT_BRANCH": "main",
    }

    def prefect(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    prefect("work-pool", "create", "recops-process", "--type", "process")
    prefect("deploy", "--all", "--prefect-file", str(PREFECT_YAML))
    production = yaml.safe_load((REPO_ROOT / "configs" / "production.yaml").read_text())
    for name, (_, cron) in EXPECTED.items():
        reply = httpx.get(f"{api}/deployments/name/{name}/{name}", timeout=10)
        assert reply.status_code == 200, reply.text
        deployment = reply.json()
        assert deployment["work_pool_name"] == "recops-process"
        assert deployment["entrypoint"] == EXPECTED[name][0]
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [cron]
        assert all(s["active"] for s in deployment["schedules"])
        assert deployment["parameters"]["config"] == production
        clone = deployment["pull_steps"][0]["prefect.deployments.steps.git_clone"]
        assert clone["repository"] == "https://git.example.com/recops.git"  # {{ $VAR }} resolved
        assert deployment["job_variables"]["env"]["RECOPS_HOME"] == "/var/lib/recops"
