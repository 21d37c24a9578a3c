"""``recops deploy``, ``recops serve start|status|stop`` and ``recops bench serving``."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.app import (
    ConfigOpt,
    JsonOutOpt,
    SetOpt,
    WorkspaceOpt,
    app,
    bench_app,
    console,
    load_run_config,
    open_workspace,
    serve_app,
    write_json,
)

VersionOpt = Annotated[
    str | None,
    typer.Option(
        "--version", "-v", help="Model version to deploy (default: the registry's champion)."
    ),
]


def _champion_or(ws, version: str | None) -> str:
    from components.errors import DeployFailed
    from components.registry.store import ModelRegistry

    if version is not None:
        return version
    champion = ModelRegistry(ws).champion()
    if champion is None:
        raise DeployFailed("there is no champion to deploy", hint="train one with `recops run`")
    return champion.version


@app.command("deploy")
def deploy(
    version: VersionOpt = None,
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="local (default) or k8s.")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Deploy a model version (default: the champion) with a health-checked switch-over,
    or render and validate Kubernetes manifests for it (--target k8s)."""
    from components.errors import ConfigError

    cfg = load_run_config(config, set_, workspace)
    ws = open_workspace(cfg)
    chosen = target or cfg.deploy.target
    version = _champion_or(ws, version)
    if chosen == "local":
        from components.deploy.local import deploy_version

        d = deploy_version(ws, version, cfg.serve, cfg.deploy, cfg.features)
        console.print(
            f"deployed [bold]{d.version}[/bold] ({d.bento_tag}) at {d.url} "
            f"(pid {d.pid}; previous: {d.previous_version or 'none'})"
        )
        write_json(json_out, d.__dict__)
    elif chosen == "k8s":
        from components.deploy.bento import build_bento
        from components.deploy.k8s import render_manifests

        bento = build_bento(ws, version, cfg.serve, cfg.deploy, cfg.features)
        out = render_manifests(ws, bento.version, bento.tag, cfg.serve, cfg.deploy)
        console.print(
            f"rendered and validated {len(out.files)} manifests for {bento.version} "
            f"in {out.directory}"
        )
        console.print(
            f"next: bentoml containerize {bento.tag} -t {out.image}  "
            f"(BENTOML_HOME={ws.bentoml_home}); kubectl apply -f {out.directory}"
        )
        write_json(
            json_out,
            {
                "version": bento.version,
                "bento_tag": bento.tag,
                "image": out.image,
                "files": [str(f) for f in out.files],
            },
        )
    else:
        raise ConfigError(f"unknown deploy target {chosen!r} (local or k8s)")


@serve_app.command("start")
def serve_start(
    version: VersionOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Start (or switch) the local deployment to a version (default: the champion)."""
    from components.deploy.local import deploy_version, read_state

    cfg = load_run_config(config, set_, workspace)
    ws = open_workspace(cfg)
    version = _champion_or(ws, version)
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
    d = deploy_version(ws, version, cfg.serve, cfg.deploy, cfg.features)
    console.print(f"serving [bold]{d.version}[/bold] at {d.url} (pid {d.pid})")


@serve_app.command("status")
def serve_status_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Show what is deployed locally: version, port, pid, health."""
    from components.deploy.local import serve_status

    cfg = load_run_config(config, set_, workspace)
    ws = open_workspace(cfg)
    status = serve_status(ws, cfg.serve)
    if not status["deployed"]:
        console.print("nothing is deployed (run `recops deploy`)")
    else:
        for key, value in status.items():
            console.print(f"{key:>17}: {value}")
    write_json(json_out, status)
    if status["deployed"] and status.get("readyz") != 200:
        raise typer.Exit(1)


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
    duration: Annotated[float, typer.Option(help="Seconds per concurrency level.")] = 5.0,
    concurrency: Annotated[
        list[int] | None, typer.Option("--concurrency", help="Levels (repeatable).")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Latency/throughput of the deployed bento vs a BentoML echo service vs the
    in-process model call, at concurrency 1, 8 and 32."""
    from benchmarks.serving import render_table, run_serving_benchmark

    cfg = load_run_config(config, set_, workspace)
    ws = open_workspace(cfg)
    result = run_serving_benchmark(ws, cfg, levels=concurrency or [1, 8, 32], duration_s=duration)
    console.print(render_table(result))
    write_json(json_out, result)
