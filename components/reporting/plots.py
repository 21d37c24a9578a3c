"""The report's plots, drawn with matplotlib and saved as PNG files.

matplotlib rather than plotly: the same static PNG serves the HTML page (inlined as a
data URI, so the page needs no network and no JavaScript runtime) and the person who only
has a terminal (the files sit beside the page); a plotly page carries ~4 MB of inline
JavaScript per report to draw three small charts. The ``Agg`` backend needs no display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

GATE_METRICS = ("hr@10", "ndcg@10", "mrr", "coverage@10")
CHALLENGER_COLOUR = "#1f77b4"
REFERENCE_COLOUR = "#b0b0b0"


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curves(history: Sequence[Mapping[str, Any]], k: int, path: Path) -> Path | None:
    """Train loss and valid NDCG/HR@k per validation; the best validation marked."""
    rows = [h for h in history if h.get(f"ndcg@{k}") is not None]
    if not rows:
        return None
    epochs = [h["epoch"] for h in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    losses = [(h["epoch"], h["train_loss"]) for h in rows if h.get("train_loss") is not None]
    if losses:
        left.plot(*zip(*losses, strict=True), marker="o", color="#d62728")
    left.set(title="train loss (mean per epoch)", xlabel="epoch", ylabel="loss")
    ndcg = [h[f"ndcg@{k}"] for h in rows]
    right.plot(epochs, ndcg, marker="o", label=f"valid NDCG@{k}", color=CHALLENGER_COLOUR)
    right.plot(
        epochs, [h.get(f"hr@{k}") for h in rows], marker=".", label=f"valid HR@{k}", color="#ff7f0e"
    )
    best = max(range(len(ndcg)), key=ndcg.__getitem__)
    right.axvline(epochs[best], color="grey", linestyle=":", label="best (restored)")
    right.set(title="validation", xlabel="epoch")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def gate_bars(
    challenger: Mapping[str, float],
    reference: Mapping[str, float] | None,
    reference_name: str,
    path: Path,
) -> Path:
    """Challenger vs reference (the champion re-scored, or the baseline) per metric."""
    metrics = [m for m in GATE_METRICS if m in challenger]
    fig, ax = plt.subplots(figsize=(6, 3))
    xs = range(len(metrics))
    width = 0.38
    ax.bar(
        [x - width / 2 for x in xs],
        [challenger[m] for m in metrics],
        width,
        label="challenger",
        color=CHALLENGER_COLOUR,
    )
    if reference:
        ax.bar(
            [x + width / 2 for x in xs],
            [reference.get(m, 0.0) for m in metrics],
            width,
            label=reference_name,
            color=REFERENCE_COLOUR,
        )
    ax.set_xticks(list(xs), metrics)
    ax.set(title="gate: same test split, both sides")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def breakdown_bars(
    tables: Mapping[str, Sequence[Mapping[str, Any]]], metric: str, path: Path
) -> Path | None:
    """``metric`` per bucket, one panel per breakdown, user counts on the bars."""
    panels = [(name, rows) for name, rows in tables.items() if rows]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], panels, strict=True):
        labels = [r["bucket"] for r in rows]
        values = [r["metrics"].get(metric, 0.0) for r in rows]
        bars = ax.bar(range(len(rows)), values, color=CHALLENGER_COLOUR)
        for bar, row in zip(bars, rows, strict=True):
            ax.annotate(
                f"n={row['n_users']}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=8)
        ax.set(title=f"test {metric} by {name.replace('_', ' ')}")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
