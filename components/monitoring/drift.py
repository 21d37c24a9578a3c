"""Drift of live traffic against the serving version's training data.

Four statistics, each with its threshold in ``MonitoringConfig.drift``:

- **item popularity**: Jensen–Shannon distance (base 2, in [0, 1]) between the item
  distribution of live traffic and that of the training events. Live traffic is the
  feedback events plus the history items of served requests (the log keeps each
  request's most recent ``serve.log.history_items``), each (user, item) pair of the
  histories counted once: a user who asks ten times with the same history is one
  sample, not ten (anonymous requests count per request);
- **history length**: the same distance between log2-binned history lengths of served
  requests and the per-user sequence lengths of the training data;
- **unknown-item share** of live events and **cold-start share** of served requests.

A distance between a finite sample and a distribution is never 0: a live batch of 5,000
events over 500 items sits near 0.19 from its own source. So the distances are judged
*in excess of sampling noise*: the 99th percentile of the distance between the reference
and multinomial samples of the live size drawn from it (``null_draws`` draws, seeded).
Drift is an excess above the threshold. This is why one fixed cut on the raw distance
(one hand-picked number) is not used: it would fire on every small batch and miss large ones.

The one-row summary is checked by a second Great Expectations suite (``recops_live_drift``)
through the same runner as ingestion, so results land in the same Data Docs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.monitoring.config import DriftThresholds
from components.workspace import Workspace

DRIFT_SUITE = "recops_live_drift"
NULL_QUANTILE = 0.99
ITEM_JS = "item_popularity_js_excess"
LENGTH_JS = "history_length_js_excess"
UNKNOWN = "unknown_item_share"
COLD = "cold_start_share"


@dataclass(frozen=True)
class DriftCheck:
    name: str
    observed: float | None  # the statistic (a distance excess or a share)
    threshold: float
    drifted: bool
    details: str


@dataclass(frozen=True)
class DriftReport:
    checks: list[DriftCheck]
    drifted: bool
    n_live_events: int
    n_requests: int
    data_docs_page: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def reasons(self) -> list[str]:
        return [c.details for c in self.checks if c.drifted]


def js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon distance (base 2) between each row of ``p`` and ``q`` (counts)."""
    p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-12)
    q = q / np.maximum(q.sum(axis=-1, keepdims=True), 1e-12)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(a > 0, a * np.log2(a / np.where(m > 0, m, 1)), 0.0)
        return terms.sum(axis=-1)

    return np.sqrt(np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0))


def aligned_counts(ref: pd.Series, liv: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Two count series (value -> count) as count vectors over the union of their values."""
    keys = ref.index.union(liv.index)
    return (
        ref.reindex(keys, fill_value=0).to_numpy(np.float64),
        liv.reindex(keys, fill_value=0).to_numpy(np.float64),
    )


def js_excess(
    reference: np.ndarray, live: np.ndarray, draws: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """(observed distance, noise quantile, excess) for aligned count vectors."""
    observed = float(js_rows(reference, live))
    n = int(live.sum())
    probs = reference / reference.sum()
    samples = rng.multinomial(n, probs, size=draws).astype(np.float64)
    noise = float(
        np.quantile(js_rows(np.broadcast_to(reference, samples.shape), samples), NULL_QUANTILE)
    )
    return observed, noise, max(0.0, observed - noise)


def item_counts(values: pa.Array | pa.ChunkedArray) -> pd.Series:
    """How often each non-null value occurs, counted in Arrow (no Python object per value:
    a million served histories are tens of millions of item ids)."""
    counted = pc.value_counts(pc.drop_null(values))
    return pd.Series(
        counted.field("counts").to_numpy(zero_copy_only=False).astype(np.float64),
        index=pd.Index(counted.field("values").to_pylist(), dtype=object),
    )


def served_history_counts(served: pa.Table) -> pd.Series:
    """Item -> count over served histories, each (user, item) pair once; a request
    without a user id is its own user. Empty for logs written before histories were kept.

    Works in integer codes one log chunk at a time (a million requests hold tens of
    millions of history item ids): no Python string per item, no copy of the column."""
    if served.num_rows == 0:
        return pd.Series(dtype=np.float64)
    history = served["history"]
    vocabulary = pc.unique(pc.list_flatten(history))
    if len(vocabulary) == 0:
        return pd.Series(dtype=np.float64)
    owner = pc.coalesce(served["user_id"], served["request_id"]).combine_chunks()
    owners = owner.dictionary_encode().indices.to_numpy().astype(np.int64)
    n_items = len(vocabulary)
    parts, start = [], 0
    for chunk in history.chunks:
        parents = pc.list_parent_indices(chunk).to_numpy().astype(np.int64) + start
        codes = pc.index_in(pc.list_flatten(chunk), value_set=vocabulary).to_numpy()
        parts.append(np.unique(owners[parents] * n_items + codes))
        start += len(chunk)
    items = np.unique(np.concatenate(parts)) % n_items
    counts = np.bincount(items, minlength=n_items).astype(np.float64)
    return pd.Series(counts, index=pd.Index(vocabulary.to_pylist(), dtype=object))[counts > 0]


def live_item_counts(served: pa.Table, feedback: pa.Table) -> pd.Series:
    """Item counts of live traffic: distinct served-history pairs plus feedback events."""
    counts = served_history_counts(served)
    return counts.add(item_counts(feedback["item_id"]), fill_value=0.0)


def length_bins(lengths: np.ndarray) -> pd.Series:
    """History lengths as log2 bins: 0, 1, 2-3, 4-7, ... (bin b holds [2^(b-1), 2^b))."""
    lengths = np.asarray(lengths, dtype=np.int64)
    bins = np.where(lengths > 0, np.floor(np.log2(np.maximum(lengths, 1))).astype(np.int64) + 1, 0)
    return pd.Series(bins)


def drift_summary(
    reference_items: pd.Series,
    reference_lengths: np.ndarray,
    live_item_counts: pd.Series,
    live_lengths: np.ndarray,
    cold_start_share: float | None,
    cfg: DriftThresholds,
    *,
    draws: int = 200,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The one-row frame the drift suite checks, and a sentence per statistic.

    ``reference_items``: the training events' item ids; ``live_item_counts``: live item
    id -> count (:func:`live_item_counts`, or ``series.value_counts()`` of live events).
    A statistic without enough live data (fewer than ``cfg.min_events`` events or
    requests) is left out: no verdict rather than a noisy one.
    """
    rng = np.random.default_rng(seed)
    row: dict[str, float] = {}
    text: dict[str, str] = {}
    n_live = float(live_item_counts.sum())
    if n_live >= cfg.min_events:
        ref_counts = reference_items.value_counts()
        obs, noise, excess = js_excess(*aligned_counts(ref_counts, live_item_counts), draws, rng)
        row[ITEM_JS] = excess
        text[ITEM_JS] = (
            f"item popularity JS distance {obs:.3f} vs noise {noise:.3f} "
            f"(excess {excess:.3f}, allowed {cfg.item_popularity_js:.3f})"
        )
        unknown = ~live_item_counts.index.isin(ref_counts.index)
        share = float(live_item_counts[unknown].sum() / n_live)
        row[UNKNOWN] = share
        text[UNKNOWN] = f"unknown-item share {share:.3f} (allowed {cfg.max_unknown_item_share:.3f})"
    if len(live_lengths) >= cfg.min_events:
        ref_b, live_b = length_bins(reference_lengths), length_bins(live_lengths)
        counts = aligned_counts(ref_b.value_counts(), live_b.value_counts())
        obs, noise, excess = js_excess(*counts, draws, rng)
        row[LENGTH_JS] = excess
        text[LENGTH_JS] = (
            f"history length JS distance {obs:.3f} vs noise {noise:.3f} "
            f"(excess {excess:.3f}, allowed {cfg.history_length_js:.3f})"
        )
        if cold_start_share is not None:
            row[COLD] = cold_start_share
            text[COLD] = (
                f"cold-start share {cold_start_share:.3f} (allowed {cfg.max_cold_start_share:.3f})"
            )
    return pd.DataFrame([row]) if row else pd.DataFrame(), text


def thresholds_of(cfg: DriftThresholds) -> dict[str, float]:
    return {
        ITEM_JS: cfg.item_popularity_js,
        LENGTH_JS: cfg.history_length_js,
        UNKNOWN: cfg.max_unknown_item_share,
        COLD: cfg.max_cold_start_share,
    }


def drift_expectations(columns: list[str], cfg: DriftThresholds) -> list:
    """One GX ``ExpectColumnValuesToBeBetween(max_value=threshold)`` per present statistic."""
    import great_expectations.expectations as gxe

    limits = thresholds_of(cfg)
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column=col, min_value=0.0, max_value=limits[col], meta={"check": f"{col}_within_bounds"}
        )
        for col in columns
    ]


def check_drift(
    workspace: Workspace,
    summary: pd.DataFrame,
    text: dict[str, str],
    cfg: DriftThresholds,
    *,
    run_name: str,
    n_live_events: int,
    n_requests: int,
) -> DriftReport:
    """Run the drift suite on the summary row; a failed expectation is drift."""
    from components.validation.runner import validate_summary

    if summary.empty:
        return DriftReport([], False, n_live_events, n_requests)
    columns = list(summary.columns)
    results, page = validate_summary(
        workspace, DRIFT_SUITE, drift_expectations(columns, cfg), summary, run_name
    )
    limits = thresholds_of(cfg)
    checks = []
    for er in results:
        col = er.expectation_config.kwargs["column"]
        checks.append(
            DriftCheck(
                name=col,
                observed=round(float(summary[col].iloc[0]), 6),
                threshold=limits[col],
                drifted=not bool(er.success),
                details=text.get(col, col),
            )
        )
    return DriftReport(checks, any(c.drifted for c in checks), n_live_events, n_requests, page)
