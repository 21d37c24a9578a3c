"""Model-level influence: which behaviour a model relies on, over a sample of test users.

For each sampled test user the model's top-``k`` recommendations (history items
excluded, as served) are explained by counterfactual deletion
(:mod:`components.explain.influence`); the report aggregates over all (user,
recommended item) pairs:

- **by position from the end** (``events_ago`` 1 = the most recent event): the mean score
  drop when that event is removed, and its mean share of the pair's total absolute
  influence (how far back behaviour matters);
- **by event type** (where the data has more than one): mean score drop and event count;
- **last-item share**: the share of recommendations whose most influential event (largest
  score drop) is the most recent one.

:func:`write_report` writes ``influence.json`` and ``influence.png`` into a run folder,
for the new model and the champion side by side when there is one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from torch import Tensor

from components.data.sequences import Sequences, Vocabulary
from components.data.splits import EvalSet
from components.explain.config import ExplainConfig
from components.explain.histories import EvalHistories, remap_histories, sampled_histories
from components.explain.influence import Influence, Question, deletion_influence, is_explainable
from components.models.bundle import ModelBundle

REPORT_JSON = "influence.json"
REPORT_PNG = "influence.png"
PLOT_POSITIONS = 20  # events_ago shown in the plot


class PositionRow(BaseModel):
    events_ago: int
    pairs: int  # (user, item) pairs whose history reaches this far back
    mean_influence: float  # mean score drop when the event is removed
    mean_share: float  # mean share of the pair's total |influence|


class TypeRow(BaseModel):
    event_type: str
    events: int
    mean_influence: float


class InfluenceReport(BaseModel):
    """Influence summary of one model (see module doc)."""

    label: str  # "challenger" / "champion"
    model_name: str
    model_version: str | None
    explainable: bool
    users: int
    pairs: int
    k: int
    last_item_share: float | None
    mean_top_influence: float | None  # mean largest score drop per pair
    by_events_ago: list[PositionRow]
    by_event_type: list[TypeRow]


def explain_top_k(
    bundle: ModelBundle, histories: Tensor, k: int, max_events: int
) -> list[Influence]:
    """Deletion influence of each history's events on its top-``k`` recommendations."""
    items, _ = bundle.recommend(histories, k, exclude_seen=True)
    questions = [
        Question(row[row != 0].cpu(), targets.cpu())
        for row, targets in zip(histories, items, strict=True)
    ]
    return deletion_influence(bundle.model, questions, bundle.max_len, max_events)


def summarise(
    influences: list[Influence],
    event_types: list[list[str]] | None,
    *,
    label: str,
    bundle: ModelBundle,
    version: str | None,
    k: int,
) -> InfluenceReport:
    """Aggregate per-pair influence into an :class:`InfluenceReport`."""
    explainable = is_explainable(bundle.model)
    drops, ago, types = _pair_arrays(influences, event_types)
    return InfluenceReport(
        label=label,
        model_name=bundle.model_name,
        model_version=version,
        explainable=explainable,
        users=len(influences),
        pairs=len(drops),
        k=k,
        last_item_share=_last_item_share(drops, ago) if explainable and drops else None,
        mean_top_influence=(
            float(np.mean([d.max() for d in drops if d.size])) if explainable and drops else None
        ),
        by_events_ago=_by_position(drops, ago) if explainable else [],
        by_event_type=_by_type(drops, types) if explainable and types is not None else [],
    )


def _pair_arrays(
    influences: list[Influence], event_types: list[list[str]] | None
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None]:
    """Per (user, item) pair: drops over explained events, their events_ago, their types."""
    drops: list[np.ndarray] = []
    ago: list[np.ndarray] = []
    types: list[np.ndarray] | None = [] if event_types is not None else None
    for row, influence in enumerate(influences):
        length = influence.history.numel()
        positions = influence.positions.numpy()
        steps_back = length - positions
        kinds = None
        if event_types is not None:
            full = np.asarray(event_types[row], dtype=object)
            # the scored history is the last `length` events of the row
            kinds = full[len(full) - length :][positions]
        for target in range(influence.targets.numel()):
            drops.append(influence.drops[target].numpy().astype(np.float64))
            ago.append(steps_back)
            if types is not None and kinds is not None:
                types.append(kinds)
    return drops, ago, types


def _last_item_share(drops: list[np.ndarray], ago: list[np.ndarray]) -> float:
    hits = [bool(a[int(np.argmax(d))] == 1) for d, a in zip(drops, ago, strict=True) if d.size]
    return float(np.mean(hits)) if hits else 0.0


def _by_position(drops: list[np.ndarray], ago: list[np.ndarray]) -> list[PositionRow]:
    if not drops:
        return []
    flat_drop = np.concatenate(drops)
    flat_ago = np.concatenate(ago)
    shares = [np.abs(d) / max(float(np.abs(d).sum()), 1e-12) for d in drops]
    flat_share = np.concatenate(shares)
    rows = []
    for steps in range(1, int(flat_ago.max(initial=0)) + 1):
        at = flat_ago == steps
        if not at.any():
            continue
        rows.append(
            PositionRow(
                events_ago=steps,
                pairs=int(at.sum()),
                mean_influence=float(flat_drop[at].mean()),
                mean_share=float(flat_share[at].mean()),
            )
        )
    return rows


def _by_type(drops: list[np.ndarray], types: list[np.ndarray]) -> list[TypeRow]:
    if not drops:
        return []
    flat_drop = np.concatenate(drops)
    flat_type = np.concatenate(types).astype(str)
    return [
        TypeRow(
            event_type=kind,
            events=int((flat_type == kind).sum()),
            mean_influence=float(flat_drop[flat_type == kind].mean()),
        )
        for kind in sorted(set(flat_type.tolist()))
    ]


def influence_report(
    bundle: ModelBundle,
    data: EvalHistories,
    cfg: ExplainConfig,
    *,
    label: str,
    version: str | None,
) -> InfluenceReport:
    """Explain the top-k recommendations of every history in ``data``."""
    influences = explain_top_k(bundle, data.histories, cfg.report_k, cfg.max_events)
    return summarise(
        influences, data.event_types, label=label, bundle=bundle, version=version, k=cfg.report_k
    )


def report_markdown(reports: list[InfluenceReport]) -> str:
    """A Markdown summary: headline figures per model, then influence by position."""
    lines = [
        "# Behaviour influence (counterfactual deletion)",
        "",
        "| model | version | users | recommendations | driven mostly by the last event "
        "| mean top-event score drop |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        share = "not explainable" if r.last_item_share is None else f"{r.last_item_share:.1%}"
        top = "-" if r.mean_top_influence is None else f"{r.mean_top_influence:.4f}"
        lines.append(
            f"| {r.label}: {r.model_name} | `{r.model_version}` | {r.users} | {r.pairs} "
            f"| {share} | {top} |"
        )
    lines += ["", "## Mean share of |influence| by events ago (1 = most recent)", ""]
    lines.append("| events ago | " + " | ".join(r.label for r in reports) + " |")
    lines.append("|---" * (len(reports) + 1) + "|")
    for steps in range(1, 11):
        cells = []
        for r in reports:
            row = next((p for p in r.by_events_ago if p.events_ago == steps), None)
            cells.append("-" if row is None else f"{row.mean_share:.3f}")
        lines.append(f"| {steps} | " + " | ".join(cells) + " |")
    typed = [r for r in reports if len(r.by_event_type) > 1]
    if typed:
        lines += ["", "## Mean score drop by event type", ""]
        for r in typed:
            shown = ", ".join(
                f"{t.event_type} {t.mean_influence:.4f} ({t.events})" for t in r.by_event_type
            )
            lines.append(f"- {r.label}: {shown}")
    return "\n".join(lines) + "\n"


def plot_reports(reports: list[InfluenceReport], path: Path) -> Path:
    """PNG: mean share of |influence| by events ago, one line per model (and event-type
    bars when the data has several types)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    typed = [r for r in reports if len(r.by_event_type) > 1]
    fig, axes = plt.subplots(1, 2 if typed else 1, figsize=(11 if typed else 6.5, 4))
    axes = np.atleast_1d(axes)
    for r in reports:
        rows = [p for p in r.by_events_ago if p.events_ago <= PLOT_POSITIONS]
        if rows:
            share = "" if r.last_item_share is None else f", last event top {r.last_item_share:.0%}"
            axes[0].plot(
                [p.events_ago for p in rows],
                [p.mean_share for p in rows],
                marker="o",
                label=f"{r.label}: {r.model_name}{share}",
            )
    axes[0].set_xlabel("events ago (1 = most recent)")
    axes[0].set_ylabel("mean share of |score drop|")
    axes[0].set_title("How far back behaviour matters")
    axes[0].legend(fontsize=8)
    if typed:
        width = 0.8 / len(typed)
        for n, r in enumerate(typed):
            kinds = [t.event_type for t in r.by_event_type]
            axes[1].bar(
                np.arange(len(kinds)) + n * width,
                [t.mean_influence for t in r.by_event_type],
                width,
                label=r.label,
            )
            axes[1].set_xticks(np.arange(len(kinds)) + width * (len(typed) - 1) / 2, kinds)
        axes[1].set_ylabel("mean score drop")
        axes[1].set_title("By event type")
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(reports: list[InfluenceReport], run_dir: Path) -> tuple[Path, Path]:
    """``influence.json`` and ``influence.png`` in ``run_dir``; returns both paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    json_path = run_dir / REPORT_JSON
    payload = [r.model_dump(mode="json") for r in reports]
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    return json_path, plot_reports(reports, run_dir / REPORT_PNG)


def model_influence(
    challenger: ModelBundle,
    champion: ModelBundle | None,
    data: EvalHistories,
    vocab: Vocabulary,
    cfg: ExplainConfig,
    *,
    challenger_version: str | None,
    champion_version: str | None,
) -> list[InfluenceReport]:
    """Reports for the challenger and (when there is one) the champion on the same sampled
    histories (``data`` in ``vocab`` indices; remapped into the champion's vocabulary)."""
    reports = [
        influence_report(challenger, data, cfg, label="challenger", version=challenger_version)
    ]
    if champion is not None:
        remapped = remap_histories(data, vocab, champion.vocab, champion.max_len)
        reports.append(
            influence_report(champion, remapped, cfg, label="champion", version=champion_version)
        )
    return reports


def run_influence(
    challenger: ModelBundle,
    champion: ModelBundle | None,
    sequences: Sequences,
    eval_set: EvalSet,
    vocab: Vocabulary,
    event_types: np.ndarray | None,
    cfg: ExplainConfig,
    run_dir: Path,
    *,
    challenger_version: str | None,
    champion_version: str | None,
) -> tuple[list[InfluenceReport], Path, Path]:
    """The retrain's influence report: sample ``eval_set`` (the test split), explain the
    challenger and the champion, write ``influence.json`` / ``influence.png`` into
    ``run_dir``. Returns the reports and both paths."""
    data = sampled_histories(eval_set, sequences, event_types, cfg.report_users, cfg.seed)
    reports = model_influence(
        challenger,
        champion,
        data,
        vocab,
        cfg,
        challenger_version=challenger_version,
        champion_version=champion_version,
    )
    json_path, png_path = write_report(reports, run_dir)
    return reports, json_path, png_path
