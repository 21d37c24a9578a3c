"""``recops deploy``, ``recops serve start|status|stop`` and ``recops bench serving``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from components.config import RecopsConfig
    from components.deploy.config import LocalDeployConfig
    from components.deploy.targets import ChallengerMode, Deployed, DeployTarget
    from components.workspace import Workspace

from flows.cli.app import (
    ConfigOpt,
    FormatOpt,
    JsonOutOpt,
    SetOpt,
    WorkspaceOpt,
    app,
    bench_app,
    console,
    load_run_config,
    open_workspace,
    prologue,
    serve_app,
    write_json,
)

VersionOpt = Annotated[
    str | None,
    typer.Option(
        "--version", "-v", help="Model version to deploy (default: the registry's champion)."
    ),
]


deploy_app = typer.Typer(
    help="Deploy a model version; compare and conclude a shadow or canary.",
    invoke_without_command=True,
)
app.add_typer(deploy_app, name="deploy")

ModeOpt = Annotated[
    str | None,
    typer.Option(
        "--mode",
        "-m",
        help="replace (switch the champion), shadow (mirrored, never answers clients) or "
        "canary (answers --share of users); default: deploy.mode.",
    ),
]


@deploy_app.callback()
def deploy(
    ctx: typer.Context,
    version: VersionOpt = None,
    target: Annotated[
        str | None,
        typer.Option("--target", "-t", help="local, k8s or none (default: deploy.target)."),
    ] = None,
    mode: ModeOpt = None,
    share: Annotated[
        float | None,
        typer.Option("--share", help="canary: share of users (sticky); shadow: of requests."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Deploy a model version (default: the champion) through the configured target: a
    health-checked local switch-over, or a bento + validated Kubernetes manifests (k8s);
    with --mode shadow|canary, serve it beside the champion instead."""
    if ctx.invoked_subcommand is not None:
        return
    from components.lifecycle.deploy import deploy as deploy_use_case
    from components.lifecycle.deploy import target_for

    overrides = list(set_ or []) + ([f"deploy.target={target}"] if target else [])
    overrides += [f"deploy.mode={mode}"] if mode else []
    if share is not None:
        key = "share" if (mode or "") == "canary" else "mirror_share"
        overrides.append(f"deploy.challenger.{key}={share}")
    cfg, ws = prologue(config, overrides, workspace)
    deploy_target = target_for(cfg.deploy, cfg.serve, cfg.features)
    if cfg.deploy.mode != "replace":
        done = _attach(ws, deploy_target, version, cfg.deploy.mode)
        write_json(json_out, dataclasses.asdict(done))
        return
    done = deploy_use_case(ws, deploy_target, version)
    console.print(f"deployed {done.describe()}; previous: {done.previous_version or 'none'}")
    if done.target == "k8s":
        console.print(
            f"next: bentoml containerize {done.detail['bento']} -t {done.detail['image']}  "
            f"(BENTOML_HOME={ws.bentoml_home}); kubectl apply -f {done.detail['manifests']}"
        )
    write_json(json_out, dataclasses.asdict(done))


def _attach(ws: Workspace, deploy_target: DeployTarget, version: str | None, mode: str) -> Deployed:
    from components.errors import ConfigError
    from components.lifecycle.online import start
    from components.registry.changes import default_actor

    if version is None:
        raise ConfigError(f"--mode {mode} needs the challenger's --version")
    challenger_mode: ChallengerMode = "canary" if mode == "canary" else "shadow"
    done = start(ws, deploy_target, version, challenger_mode, actor=default_actor())
    where = done.url or done.detail.get("manifests", "-")
    console.print(
        f"{mode}: {done.version} beside champion {done.previous_version} at {where} "
        f"(`recops deploy compare`, then `recops deploy conclude`)"
    )
    return done


@deploy_app.command("compare")
def deploy_compare(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Champion vs the attached shadow/canary: top-k agreement, latency, errors and
    hit-rate@k per arm from feedback, with a test, confidence intervals and the decision."""
    from components.lifecycle.deploy import target_for
    from components.lifecycle.online import compare_online

    cfg, ws = prologue(config, set_, workspace)
    target = target_for(cfg.deploy, cfg.serve, cfg.features)
    comparison = compare_online(ws, target, cfg.deploy.challenger)
    console.print(comparison.table(), markup=False, highlight=False)
    write_json(json_out, comparison.as_dict())


@deploy_app.command("conclude")
def deploy_conclude(
    decision: Annotated[
        str,
        typer.Option("--decision", help="auto (the test decides), or force promote / retire."),
    ] = "auto",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Promote the attached challenger (switch-over, online evidence in the registry
    history) or retire it, as the online comparison decides."""
    from components.errors import ConfigError
    from components.lifecycle.deploy import target_for
    from components.lifecycle.online import conclude
    from components.registry.changes import default_actor

    if decision not in ("auto", "promote", "retire"):
        raise ConfigError(f"--decision must be auto, promote or retire, not {decision!r}")
    cfg, ws = prologue(config, set_, workspace)
    done = conclude(
        ws,
        target_for(cfg.deploy, cfg.serve, cfg.features),
        cfg.deploy.challenger,
        actor=default_actor(),
        force=decision,  # type: ignore[arg-type]
    )
    console.print(done.comparison.table(), markup=False, highlight=False)
    console.print(done.promotion.change.describe())
    write_json(
        json_out,
        {
            "decision": done.decision,
            "forced": done.forced,
            "comparison": done.comparison.as_dict(),
            "change": done.promotion.change.model_dump(mode="json"),
        },
    )


@deploy_app.command("detach")
def deploy_detach(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Stop the attached shadow/canary without a decision (recorded in the history)."""
    from components.lifecycle.deploy import target_for

    cfg, ws = prologue(config, set_, workspace)
    target = target_for(cfg.deploy, cfg.serve, cfg.features)
    stopped = target.detach(ws, "stopped by hand (`recops deploy detach`)")
    console.print(f"stopped {stopped}" if stopped else "no challenger was attached")


@serve_app.command("start")
def serve_start(
    version: VersionOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Start (or switch) the local deployment to a version (default: the champion)."""
    from components.deploy.config import LocalDeployConfig
    from components.deploy.local import read_state
    from components.deploy.targets import LocalTarget
    from components.lifecycle.deploy import champion_or

    cfg, ws = prologue(config, set_, workspace)
    version = champion_or(ws, version)
    state = read_state(ws)
    if (
        state
        and state.version == version
        and state.backend
        and state.backend.alive()
        and state.proxy
        and state.proxy.alive()
    ):
        console.print(f"{version} is already serving at http://{state.host}:{state.public_port}")
        return
    settings = cfg.deploy if isinstance(cfg.deploy, LocalDeployConfig) else LocalDeployConfig()
    done = LocalTarget(settings, cfg.serve, cfg.features).deploy(ws, version)
    console.print(f"serving [bold]{done.version}[/bold] at {done.url}")


def local_deploy_config(cfg: RecopsConfig) -> LocalDeployConfig | None:
    """The local target's settings when the config deploys locally (supervision knobs)."""
    from components.deploy.config import LocalDeployConfig

    return cfg.deploy if isinstance(cfg.deploy, LocalDeployConfig) else None


@serve_app.command("status")
def serve_status_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Show what is deployed locally: version, port, pids, health, restarts. Exit code
    (Nagios plugin convention): 0 ok, 1 warning (serving, but something was restarted,
    rolled back or repaired), 2 critical (deployed, not serving), 3 nothing deployed.
    Also stops stray processes and restarts a dead supervisor (reported as repaired)."""
    from components.deploy.local import serve_status

    cfg, ws = prologue(config, set_, workspace)
    status = serve_status(ws, cfg.serve, local_deploy_config(cfg))
    if not status["deployed"]:
        console.print("nothing is deployed (run `recops deploy`)")
    else:
        for key, value in status.items():
            console.print(f"{key:>17}: {value}")
    if status["deployed"] and status.get("champion") and status["champion"] != status["version"]:
        console.print(
            f"{status['version']} serves but {status['champion']} is the champion: "
            "`recops serve reconcile` serves the champion again"
        )
    write_json(json_out, status)
    if status["exit_code"]:
        raise typer.Exit(status["exit_code"])


@serve_app.command("reconcile")
def serve_reconcile(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Serve the registry's champion again when the local deployment serves another
    version (a deploy killed before its promote); recorded in the registry history."""
    from components.deploy.config import LocalDeployConfig
    from components.deploy.targets import LocalTarget
    from components.lifecycle.reconcile import reconcile

    cfg, ws = prologue(config, set_, workspace)
    settings = cfg.deploy if isinstance(cfg.deploy, LocalDeployConfig) else LocalDeployConfig()
    target = LocalTarget(settings, cfg.serve, cfg.features)
    done = reconcile(ws, target.deploy, actor="cli")
    if done is None:
        console.print("serving and the champion agree (or nothing is deployed): nothing to do")
    else:
        console.print(
            f"{done.champion} serves again at {done.deployed.url} (was {done.served_before})"
        )
    write_json(json_out, None if done is None else dataclasses.asdict(done))


@serve_app.command("stop")
def serve_stop(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Stop the local deployment (backend and proxy)."""
    from components.deploy.local import stop_local

    cfg = load_run_config(config, set_, workspace)
    stopped = stop_local(open_workspace(cfg))
    console.print(f"stopped {stopped.version}" if stopped else "nothing was running")


@bench_app.command("serving")
def bench_serving(
    duration: Annotated[float, typer.Option(help="Seconds per concurrency level.")] = 6.0,
    concurrency: Annotated[
        list[int] | None, typer.Option("--concurrency", help="Levels (repeatable).")
    ] = None,
    items: Annotated[
        list[int] | None,
        typer.Option(
            "--items",
            help="Measure a scratch deployment of an untrained SASRec over N items "
            "instead of the running one (repeatable, e.g. --items 40 --items 12101).",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="cpu (default) or cuda: where the bento serves.")
    ] = "cpu",
    scorer: Annotated[
        str | None,
        typer.Option(
            "--scorer",
            help="--items: serve.scorer of the scratch deployments (onnx, traced or eager; "
            "default: serve.scorer's default), to compare them back to back.",
        ),
    ] = None,
    shadow: Annotated[
        bool,
        typer.Option(
            "--shadow",
            help="Instead: the public port's latency with a shadow attached vs without, "
            "on a scratch deployment of two untrained SASRecs (--items, default 40).",
        ),
    ] = False,
    repeats: Annotated[
        int, typer.Option(help="--shadow: back-to-back repeats of every state per level.")
    ] = 2,
    kill_backend_after: Annotated[
        float | None,
        typer.Option(
            "--kill-backend-after",
            help="Also a fault run: load at the highest level while the backend is "
            "SIGKILLed after this many seconds (the supervisor restarts it); reports the "
            "failed requests and when the public port answered again.",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Throughput and latency of the bento vs a bare BentoML echo service (back to back,
    wrk when installed) vs the in-process model call, at concurrency 1, 8 and 32, with
    the bento/echo ratios; on the running deployment or on scratch ones (--items)."""
    from benchmarks.serving import (
        measure_backend_kill,
        render_table,
        run_self_contained,
        run_serving_benchmark,
    )
    from components.errors import ConfigError

    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, not {device!r}")
    if scorer not in (None, "onnx", "traced", "eager"):
        raise ConfigError(f"--scorer must be onnx, traced or eager, not {scorer!r}")
    if shadow:
        from benchmarks.shadow import render_table as shadow_table
        from benchmarks.shadow import run_shadow_benchmark

        runs = [
            run_shadow_benchmark(n, concurrency or [8, 32], duration, repeats, device=device)
            for n in items or [40]
        ]
        for run in runs:
            console.print(shadow_table(run), markup=False, highlight=False)
        write_json(json_out, runs[0] if len(runs) == 1 else {"runs": runs})
        return
    levels = concurrency or [1, 8, 32]
    if items:
        serve = {"scorer": scorer} if scorer else {}
        results = [
            run_self_contained(
                n, levels, duration, device, serve=serve, kill_backend_after_s=kill_backend_after
            )
            for n in items
        ]
    else:
        cfg, ws = prologue(config, set_, workspace)
        results = [run_serving_benchmark(ws, cfg, levels, duration, device)]
        if kill_backend_after is not None:
            results[0]["backend_kill"] = measure_backend_kill(
                ws, cfg, max(levels), duration, kill_backend_after
            )
    for result in results:
        console.print(render_table(result))
    write_json(json_out, results[0] if len(results) == 1 else {"runs": results})


@bench_app.command("ann")
def bench_ann(
    items: Annotated[
        list[int] | None,
        typer.Option("--items", help="Catalogue sizes (repeatable; default 100000, 1000000)."),
    ] = None,
    nprobe: Annotated[
        list[int] | None, typer.Option("--nprobe", help="IVF cells searched (repeatable).")
    ] = None,
    queries: Annotated[int, typer.Option(help="Queries per size.")] = 200,
    dim: Annotated[int, typer.Option(help="Item vector size.")] = 64,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="A saved model bundle: measure its own item table, queried with its "
            "encodings of real histories from --data (--items above its size: replicated "
            "with noise).",
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Event file the --bundle was trained on.")
    ] = None,
    fmt: FormatOpt = "auto",
    json_out: JsonOutOpt = None,
) -> None:
    """Approximate (FAISS IVF, serve.ann) vs exact top-10 per query: latency, recall@10
    against the exact answer and index build time, on clustered synthetic item tables or
    a trained model's own table (--bundle, --data)."""
    from benchmarks.ann import render_table, run_ann_benchmark, trained_table
    from components.errors import ConfigError

    trained = None
    if bundle is not None:
        if data is None:
            raise ConfigError("--bundle needs --data: the event file its queries come from")
        trained = trained_table(bundle, data, fmt, queries)
    sizes = items or ([] if trained is not None else [100_000, 1_000_000])
    result = run_ann_benchmark(sizes, dim, queries, nprobe, trained)
    console.print(render_table(result), markup=False, highlight=False)
    write_json(json_out, result)


@bench_app.command("online")
def bench_online(
    requests: Annotated[
        list[int] | None,
        typer.Option("--requests", help="Horizons: total requests per test (repeatable)."),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Simulations per cell.")] = 20,
    json_out: JsonOutOpt = None,
) -> None:
    """The online decision by simulation (shadow and canary): how often a truly better
    challenger is promoted within N requests, and how often an equal one is (<= alpha)."""
    from benchmarks.online import render_table, run_online_benchmark

    result = run_online_benchmark(requests or [250, 500, 1000, 2000], seeds)
    console.print(render_table(result), markup=False, highlight=False)
    write_json(json_out, result)
