"""``recops bench funnel``: does a model that reads event types predict the next purchase better?

Data: the synthetic world with ``data.synthetic.funnel: true``
(:func:`components.data.synthetic.purchase_funnel`): each event is a view or a cart, and a
purchase follows of an item the user carted among their last 20 events. The item sequence
alone does not say which recent items were carted; the event types do.

Two oracle rows first check that the data carries the signal at all, on the same test
split: "recent carts first" ranks the history's carted items above its other items (each
group most recent first), "recent items first" ranks history items by recency alone, types
ignored. If the first does not beat the second on purchase targets, no model can gain from
event types here.

For each seed (the world's seed and the training seed), the same model is trained twice
on the same leave-one-out split, once on item ids only and once with
``model.params.event_types=true``; both are ranked against all items. Reported: test
HR@10 / NDCG@10 over all test users and over the users whose test event is a purchase
(the per-event-type breakdown of :mod:`components.evaluation.breakdown`), mean ± sd over
the seeds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.accuracy import MODEL_CONFIGS

VARIANTS: dict[str, list[str]] = {
    "ids only": ["model.params.event_types=false"],
    "ids + event types": ["model.params.event_types=true"],
}
SHOWN = ("hr@10", "ndcg@10")


def funnel_config(model: str, seed: int, size: dict[str, int], overrides: list[str]) -> Any:
    """The model's benchmark config over the funnel world of ``seed``."""
    from components.config import load_config

    path = MODEL_CONFIGS / f"{model}.yaml"
    extra = [
        f"model.name={model}",
        "data.synthetic.funnel=true",
        f"data.synthetic.seed={seed}",
        f"train.seed={seed}",
        "train.progress_bar=false",
        *(f"data.synthetic.{key}={value}" for key, value in size.items()),
    ]
    return load_config([path] if path.exists() else [], extra + overrides)


class RecentOracle:
    """A scorer that knows the funnel's rule: history items by recency, optionally with the
    items carted in the history ranked above all others. Not a model: it checks the data."""

    def __init__(self, n_items: int, cart_index: int | None) -> None:
        self.n_items = n_items
        self.cart_index = cart_index  # event-type index of "cart" (None: types ignored)

    def score(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        """``[B, n_items + 1]``: 0 for items outside the history; a history item scores its
        latest position's recency in (1, 2], plus 2 when it was ever carted."""
        n_items = self.n_items
        length = histories.shape[1]
        recency = 1.0 + torch.arange(1, length + 1, dtype=torch.float32) / length
        value = recency.expand(histories.shape).clone()
        if self.cart_index is not None and events is not None:
            carted = torch.zeros(histories.shape[0], n_items + 1)
            carted.scatter_reduce_(1, histories, (events == self.cart_index).float(), "amax")
            value += 2.0 * carted.gather(1, histories)
        scores = torch.zeros(histories.shape[0], n_items + 1)
        scores.scatter_reduce_(1, histories, value, "amax")
        scores[:, 0] = float("-inf")
        return scores


def oracle_rows(prepared: Any) -> list[dict[str, Any]]:
    """Test metrics of the two oracles (recent carts first; recent items first, types
    ignored), overall and per target event type."""
    from components.evaluation.breakdown import event_type_rows
    from components.evaluation.metrics import evaluate

    types = list(prepared.vocab.event_types)
    rows = []
    for variant, cart in (
        ("oracle: recent carts first", types.index("cart") + 1 if "cart" in types else None),
        ("oracle: recent items first", None),
    ):
        result = evaluate(RecentOracle(prepared.vocab.n_items, cart), prepared.split.test, ks=[10])
        row: dict[str, Any] = {key: result.summary[key] for key in SHOWN}
        row["test_users"] = int(result.summary["n_users"])
        by_type = event_type_rows(prepared.split.test, result.per_user, types)
        for group in by_type:
            row[f"by_type.{group.bucket}"] = {"n_users": group.n_users, **group.metrics}
        rows.append({"variant": variant, **row, "epochs": 0, "wall_s": 0.0})
    return rows


def train_variant(prepared: Any, cfg: Any) -> dict[str, Any]:
    """Train one variant; its overall and per-target-event-type test metrics."""
    from components.evaluation.breakdown import event_type_rows
    from components.lifecycle.train import train

    with tempfile.TemporaryDirectory(prefix="bench-funnel-") as tmp:
        started = time.perf_counter()
        result = train(prepared, cfg, Path(tmp) / "run").result
        wall = time.perf_counter() - started
    by_type = event_type_rows(prepared.split.test, result.per_user_test, prepared.vocab.event_types)
    row: dict[str, Any] = {key: result.metrics_test.get(key) for key in SHOWN}
    row["test_users"] = int(result.metrics_test.get("n_users", 0))
    for group in by_type:
        row[f"by_type.{group.bucket}"] = {"n_users": group.n_users, **group.metrics}
    row |= {"epochs": result.epochs, "wall_s": wall}
    table = result.bundle.model.learned_seen_table()
    if table is not None:  # logits by [event type][recency bucket], "none" first
        names = ["none", *prepared.vocab.event_types]
        row["seen_offsets"] = dict(zip(names, table, strict=False))
    return row


def run_funnel_benchmark(
    model: str,
    seeds: list[int],
    size: dict[str, int],
    *,
    max_epochs: int | None = None,
    overrides: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per (seed, variant)."""
    from components.lifecycle.prepare import prepare_dataset

    extra = [*(overrides or []), *([f"train.max_epochs={max_epochs}"] if max_epochs else [])]
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        prepared = prepare_dataset(funnel_config(model, seed, size, extra).data)
        rows.extend({"seed": seed, **row} for row in oracle_rows(prepared))
        for variant, switches in VARIANTS.items():
            cfg = funnel_config(model, seed, size, [*extra, *switches])
            row = {"variant": variant, "seed": seed, **train_variant(prepared, cfg)}
            rows.append(row)
            if progress:
                purchase = row.get("by_type.purchase", {})
                progress(
                    f"{variant} seed {seed}: HR@10 {row['hr@10']:.4f}, purchase HR@10 "
                    f"{purchase.get('hr@10', float('nan')):.4f} ({row['wall_s']:.0f}s)"
                )
    return rows


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise_funnel(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd over seeds per variant: all test users and purchase targets."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        members = [r for r in rows if r["variant"] == variant]
        entry: dict[str, Any] = {"variant": variant, "seeds": len(members)}
        for key in SHOWN:
            entry[key], entry[f"{key}_sd"] = _mean_sd([float(m[key]) for m in members])
            bought = [m["by_type.purchase"] for m in members if "by_type.purchase" in m]
            if bought:
                values = [float(b[key]) for b in bought]
                entry[f"purchase_{key}"], entry[f"purchase_{key}_sd"] = _mean_sd(values)
                entry["purchase_users"] = statistics.fmean(b["n_users"] for b in bought)
        entry["test_users"] = statistics.fmean(m["test_users"] for m in members)
        out.append(entry)
    return out


def format_funnel_table(summary: list[dict[str, Any]], model: str) -> str:
    """Variants as rows; all test users, then purchase targets (mean ± sd)."""

    def cell(entry: dict[str, Any], key: str) -> str:
        if key not in entry:
            return "-"
        return f"{entry[key]:.4f} ± {entry[f'{key}_sd']:.4f}"

    lines = [
        f"{model + ' variant':<24}{'HR@10':>20}{'NDCG@10':>20}"
        f"{'purchase HR@10':>20}{'purchase NDCG@10':>20}"
    ]
    for e in summary:
        lines.append(
            f"{e['variant']:<24}{cell(e, 'hr@10'):>20}{cell(e, 'ndcg@10'):>20}"
            f"{cell(e, 'purchase_hr@10'):>20}{cell(e, 'purchase_ndcg@10'):>20}"
        )
    if summary:
        first = summary[0]
        lines.append(
            f"mean ± sd over {first['seeds']} seed(s); leave-one-out, full ranking over all "
            f"items; ~{first['test_users']:.0f} test users per seed, of which "
            f"~{first.get('purchase_users', 0):.0f} have a purchase as their test event"
        )
    return "\n".join(lines)
