"""``recops explain --user U [--item I] [--version V]``: why a model recommends what it does.

The same engine the bento serves with (``services.engine``), in this process: the
recommendations with ``because`` events, or for ``--item`` why (not) that item. The user's
history is read from the dataset version the model was trained on (with event types).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

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
    write_json,
)

if TYPE_CHECKING:
    from services.explanations import Method
else:
    Method = str

UserOpt = Annotated[str, typer.Option("--user", "-u", help="User id to explain.")]
ItemOpt = Annotated[
    str | None, typer.Option("--item", "-i", help="Explain this item (recommended or not).")
]
VersionOpt = Annotated[
    str | None, typer.Option("--version", "-v", help="Model version (default: the champion).")
]
KOpt = Annotated[int, typer.Option("--k", "-k", min=1, help="Recommendations to explain.")]
TopOpt = Annotated[int, typer.Option("--top", min=1, help="Events listed per item.")]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="group: the events whose removal together lowers the item most (greedy group "
        "deletion; default with --item); search: the most damaging 3 events among the likely "
        "candidates (every 3-set tried); deletion: each event removed alone (default for "
        "the recommendations).",
    ),
]


@app.command("explain")
def explain(
    user: UserOpt,
    item: ItemOpt = None,
    version: VersionOpt = None,
    k: KOpt = 10,
    top: TopOpt = 3,
    method: MethodOpt = "",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Which past events of USER drove each recommendation (score drop and rank change
    when the event is removed), or why ITEM is (not) recommended."""
    chosen = _method(method, "deletion" if item is None else "group")
    engine, plan_for = _engine_and_planner(config, overrides, workspace, version, user, top)
    if item is None:
        answer = engine.recommend_local([plan_for(k, None, chosen)])[0]
        _print_recommendations(answer.model_dump(mode="json"))
    else:
        target = engine.item_index(item)
        if target is None:
            from components.errors import DataError

            raise DataError(f"unknown item {item!r}: not in model {engine.version}'s catalogue")
        answer = engine.explain_local(plan_for(1, [target], chosen), item)
        _print_item(answer.model_dump(mode="json"))
    write_json(json_out, answer.model_dump(mode="json"))


def _engine_and_planner(config, overrides, workspace, version, user: str, top: int):
    import torch

    from components.errors import RegistryError
    from components.explain.histories import user_history
    from components.registry.store import ModelRegistry
    from components.versioning.dvc_store import DatasetStore
    from components.workspace import Workspace
    from services.engine import Engine
    from services.explanations import ExplainLimits

    cfg = load_run_config(config, overrides, workspace)
    ws = Workspace.at(cfg.workspace).activate()
    registry = ModelRegistry(ws)
    chosen = registry.get(version) if version else registry.champion()
    if chosen is None:
        raise RegistryError("no champion model yet", hint="run `recops run` or pass --version")
    limits = ExplainLimits(
        max_history=cfg.serve.explain_max_history,
        max_k=cfg.serve.explain_max_k,
        top_events=top,
    )
    engine = Engine(
        registry.load_bundle(chosen.version), chosen.version, torch.device("cpu"), limits
    )
    events = DatasetStore(ws, cfg.versioning).load_events(chosen.record.data_version)
    items, types = user_history(events, user)

    def plan_for(k: int, targets: list[int] | None, method: Method):
        return engine.plan(
            items,
            k,
            True,
            [],
            explain=True,
            targets=targets,
            top=top,
            event_types=types,
            method=method,
        )

    typer.echo(f"user {user}: {len(items)} events; model {chosen.version} ({chosen.model_name})")
    return engine, plan_for


def _method(given: str, default: Method) -> Method:
    """The explanation method asked for (``default`` when none); others are a one-line error."""
    if not given:
        return default
    if given not in ("deletion", "group", "search"):
        from components.errors import ConfigError

        raise ConfigError(f"--method must be deletion, group or search, not {given!r}")
    return cast(Method, given)


def _note(explanation: dict[str, Any]) -> None:
    if not explanation["explainable"]:
        typer.echo(f"not explainable: {explanation['note']}")
    elif explanation["note"]:
        typer.echo(f"note: {explanation['note']}")


def _event_rows(events: list[dict[str, Any]], indent: str) -> None:
    for e in events:
        typer.echo(
            f"{indent}{e['item_id']:<16}{e['events_ago']:>10}  {(e['event_type'] or '-'):<12}"
            f"{e['influence']:>+11.4f}{e['rank_change']:>+13d}"
        )


def _print_recommendations(answer: dict[str, Any]) -> None:
    _note(answer["explanation"])
    typer.echo(
        f"{'rank':>4}  {'item':<16}{'score':>9}   because: {'event':<16}{'events ago':>10}  "
        f"{'type':<12}{'influence':>11}{'rank change':>13}"
    )
    for rank, item in enumerate(answer["items"], start=1):
        typer.echo(f"{rank:>4}  {item['item_id']:<16}{item['score']:>9.4f}")
        _event_rows(item["because"] or [], " " * 41)


def _print_item(answer: dict[str, Any]) -> None:
    _note(answer["explanation"])
    score = "-" if answer["score"] is None else f"{answer['score']:.4f}"
    typer.echo(f"item {answer['item_id']}: score {score}, rank {answer['rank'] or '-'}")
    header = f"{'event':<16}{'events ago':>10}  {'type':<12}{'influence':>11}{'rank change':>13}"
    for title, key in (("raised by", "because"), ("held back by", "against")):
        typer.echo(f"{title}:")
        if answer[key]:
            typer.echo("  " + header)
            _event_rows(answer[key], "  ")
        else:
            typer.echo("  (no event)")


@bench_app.command("explain")
def bench_explain(
    data: Annotated[list[Path], typer.Option("--data", "-d", help="Event file (repeatable).")],
    fmt: Annotated[
        list[str] | None,
        typer.Option("--format", "-f", help="Format of each --data, in order (default auto)."),
    ] = None,
    models: Annotated[str, typer.Option("--models", help="Comma-separated model names.")] = (
        "sasrec,srgnn"
    ),
    max_epochs: Annotated[
        int | None, typer.Option("--max-epochs", help="Cap training epochs (say so in reports).")
    ] = None,
    users: Annotated[int, typer.Option("--users", min=1, help="Test users sampled.")] = 500,
    min_history: Annotated[
        int, typer.Option("--min-history", min=4, help="Fewest history events a user needs.")
    ] = 5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    levels: Annotated[str, typer.Option("--levels", help="Concurrency levels.")] = "1,8",
    duration: Annotated[
        float, typer.Option("--duration", help="Seconds per latency level.")
    ] = 15.0,
    latency: Annotated[
        bool, typer.Option("--latency/--no-latency", help="Also measure /recommend latency.")
    ] = True,
    explain_history: Annotated[
        str,
        typer.Option(
            "--explain-history", help="serve.explain_max_history settings to measure latency at."
        ),
    ] = "50,20",
    search_pool: Annotated[
        int,
        typer.Option(
            "--search-pool", min=1, help="Top single-drop events the searched 3-sets come from."
        ),
    ] = 10,
    lock: Annotated[
        Path | None,
        typer.Option(
            "--lock",
            help="Hold an exclusive flock on this file while latency is measured (training "
            "and faithfulness run outside it), e.g. /tmp/recops-bench.lock.",
        ),
    ] = None,
    latency_models: Annotated[
        str,
        typer.Option(
            "--latency-models",
            help="Comma-separated models (of --models) whose latency is measured on the first "
            "--data (default: sasrec, or the first model).",
        ),
    ] = "",
    capped_history: Annotated[
        str,
        typer.Option(
            "--capped-history",
            help="Comma-separated H: also report deletion limited to the H most recent "
            "events (the faithfulness side of a smaller serve.explain_max_history).",
        ),
    ] = "",
    set_: SetOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Faithfulness of deletion influence (top-3 vs random vs recent deletions) and the
    latency of /recommend with and without explain."""
    import logging

    from benchmarks.common import write_report
    from benchmarks.explain import format_tables, run_explain_benchmark

    formats = list(fmt or [])
    if len(formats) not in (0, len(data)):
        from components.errors import ConfigError

        raise ConfigError("give one --format per --data (or none)")
    logging.getLogger("components.training").setLevel(logging.WARNING)
    result = run_explain_benchmark(
        [(path, formats[i] if formats else "auto") for i, path in enumerate(data)],
        [m.strip() for m in models.split(",") if m.strip()],
        max_epochs=max_epochs,
        users=users,
        min_history=min_history,
        seed=seed,
        levels=[int(x) for x in levels.split(",") if x.strip()],
        duration=duration,
        latency=latency,
        explain_histories=[int(x) for x in explain_history.split(",") if x.strip()],
        overrides=list(set_ or []),
        progress=lambda line: console.print(line, highlight=False),
        search_pool=search_pool,
        lock=lock,
        latency_models=[m.strip() for m in latency_models.split(",") if m.strip()] or None,
        caps=[int(x) for x in capped_history.split(",") if x.strip()],
    )
    typer.echo(format_tables(result))
    write_report(json_out, "explain", result)
