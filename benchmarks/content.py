"""``recops bench accuracy --seeds 1,2,3 --cold-items 0.1``: content-aware variants over seeds.

Model names may carry item features: ``sasrec+text+category`` is SASRec with
``model.params.item_features=[id, text, category]``; ``sasrec`` alone is id-only. Every
(variant, seed) is trained twice: on the leave-one-out split, and under the cold-item
protocol (a seeded share of all items removed from every training sequence; test = the
users whose test target is such an item; validation unchanged, so model selection never
sees a cold target). Both rank the target against all items. The table reports mean ± sd
over the seeds, and a 95 % Wilson interval of HR@10 pooled over the seeds (hits / test
users): the cold test sets are small (about 90 users per seed on ml-100k at a 10 % share;
``--cold-items 0.3`` triples them), so the interval says how little a few hits prove.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.accuracy import PeakRSS, _model_config

FEATURES = ("text", "category")


def split_variant(variant: str) -> tuple[str, list[str]]:
    """``"sasrec+text"`` -> ``("sasrec", ["model.params.item_features=[id,text]"])``."""
    base, *extra = variant.split("+")
    unknown = [f for f in extra if f not in FEATURES]
    if unknown:
        raise ValueError(f"{variant!r}: unknown item feature(s) {unknown}; use {FEATURES}")
    if not extra:
        return base, []
    return base, [f"model.params.item_features=[id,{','.join(extra)}]"]


def _train_once(prepared: Any, cfg: Any) -> dict[str, Any]:
    from components.lifecycle.train import train

    with tempfile.TemporaryDirectory(prefix="bench-content-") as tmp, PeakRSS() as rss:
        started = time.perf_counter()
        result = train(prepared, cfg, Path(tmp) / "run").result
        wall = time.perf_counter() - started
    epochs = max(result.epochs, 0)
    return {
        "hr@10": result.metrics_test.get("hr@10"),
        "ndcg@10": result.metrics_test.get("ndcg@10"),
        "valid_ndcg@10": result.metrics_valid.get("ndcg@10"),
        "test_users": int(result.metrics_test.get("n_users", 0)),
        "epochs": epochs,
        "train_s_per_epoch": result.train_seconds / epochs if epochs else None,
        "wall_s": wall,
        "peak_rss_mb": rss.peak_mb,
    }


def run_content_benchmark(
    data: Path,
    fmt: str,
    variants: list[str],
    seeds: list[int],
    cold_share: float,
    *,
    max_epochs: int | None = None,
    overrides: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per (variant, seed, protocol); ``on_rows`` sees the rows so far after each
    (the CLI rewrites its JSON, so a long run interrupted keeps what it measured)."""
    from components.data.splits import cold_item_split
    from components.lifecycle.prepare import prepare_dataset

    rows: list[dict[str, Any]] = []
    prepared = None
    for seed in seeds:
        for variant in variants:
            base, extra = split_variant(variant)
            cfg = _model_config(
                base,
                Path(data),
                fmt,
                max_epochs,
                [*(overrides or []), *extra, f"train.seed={seed}"],
            )
            prepared = prepared or prepare_dataset(cfg.data)
            cold_split, cold = cold_item_split(prepared.split, cold_share, seed)
            protocols = {
                "leave_one_out": prepared,
                "cold_items": dataclasses.replace(prepared, split=cold_split),
            }
            for protocol, data_for in protocols.items():
                row = {"model": variant, "seed": seed, "protocol": protocol}
                row |= _train_once(data_for, cfg)
                row["cold_items"] = len(cold)
                rows.append(row)
                if on_rows:
                    on_rows(rows)
                if progress:
                    progress(
                        f"{variant} seed {seed} {protocol}: NDCG@10 {row['ndcg@10']:.4f} "
                        f"HR@10 {row['hr@10']:.4f} ({row['wall_s']:.0f}s)"
                    )
    return rows


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % (``z`` = 1.96) Wilson score interval of a proportion ``hits / n``."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sd (over seeds) of HR@10 / NDCG@10 per (model, protocol)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["protocol"]), []).append(row)
    out = []
    for (model, protocol), members in groups.items():
        entry: dict[str, Any] = {"model": model, "protocol": protocol, "seeds": len(members)}
        for key in ("hr@10", "ndcg@10"):
            values = [float(m[key]) for m in members]
            entry[key] = statistics.fmean(values)
            entry[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        entry["test_users"] = statistics.fmean(m["test_users"] for m in members)
        hits = sum(round(float(m["hr@10"]) * m["test_users"]) for m in members)
        users = sum(m["test_users"] for m in members)
        entry["hr@10_hits"], entry["hr@10_pooled_users"] = hits, users
        entry["hr@10_wilson95"] = wilson_interval(hits, users)
        out.append(entry)
    return out


def format_content_table(summary: list[dict[str, Any]]) -> str:
    """Variants as rows, the two protocols as column groups (mean ± sd over seeds)."""
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in summary:
        by_model.setdefault(entry["model"], {})[entry["protocol"]] = entry

    def cell(entry: dict[str, Any] | None, key: str) -> str:
        if entry is None:
            return "-"
        return f"{entry[key]:.4f} ± {entry[f'{key}_sd']:.4f}"

    def interval(entry: dict[str, Any] | None) -> str:
        if entry is None:
            return "-"
        lo, hi = entry["hr@10_wilson95"]
        return f"{entry['hr@10_hits']}/{entry['hr@10_pooled_users']} [{lo:.3f}, {hi:.3f}]"

    header = (
        f"{'model':<24}{'LOO HR@10':>20}{'LOO NDCG@10':>20}{'cold HR@10':>20}{'cold NDCG@10':>20}"
        f"{'cold hits, 95% CI':>26}"
    )
    lines = [header]
    for model, protocols in by_model.items():
        loo, cold = protocols.get("leave_one_out"), protocols.get("cold_items")
        lines.append(
            f"{model:<24}{cell(loo, 'hr@10'):>20}{cell(loo, 'ndcg@10'):>20}"
            f"{cell(cold, 'hr@10'):>20}{cell(cold, 'ndcg@10'):>20}{interval(cold):>26}"
        )
    any_entry = summary[0] if summary else None
    seeds = any_entry["seeds"] if any_entry else 0
    cold_users = next((e["test_users"] for e in summary if e["protocol"] == "cold_items"), 0)
    lines.append(
        f"mean ± sd over {seeds} seed(s); full ranking over all items; cold: test users whose "
        f"target is a held-out item (~{cold_users:.0f} per seed)"
    )
    return "\n".join(lines)
