"""Drift: a batch from a shifted synthetic world is detected, one from the same world is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.data.config import SyntheticConfig
from components.data.synthetic import generate_events
from components.monitoring.config import DriftThresholds
from components.monitoring.drift import ITEM_JS, check_drift, drift_summary, js_rows

WORLD = SyntheticConfig(n_users=600, n_items=150, n_events=18000, seed=5)


def _batch(cfg: SyntheticConfig, batch: int):
    return generate_events(cfg.model_copy(update={"n_users": 100, "n_events": 3000}), batch=batch)


def _summary(reference, live, cold: float = 0.0):
    lengths = reference.groupby("user_id").size().to_numpy()
    live_lengths = live.groupby("user_id").size().to_numpy()
    return drift_summary(
        reference["item_id"],
        lengths,
        live["item_id"].value_counts(),
        live_lengths,
        cold,
        DriftThresholds(min_events=50),
    )


def test_js_distance_bounds() -> None:
    p = np.array([1.0, 0.0])
    assert js_rows(p, p) == pytest.approx(0.0)
    assert js_rows(p, np.array([0.0, 1.0])) == pytest.approx(1.0)


@pytest.mark.slow
def test_shifted_batch_is_drift_and_unshifted_is_not(workspace) -> None:
    reference = generate_events(WORLD)
    same, same_text = _summary(reference, _batch(WORLD, 1))
    shifted, shifted_text = _summary(reference, _batch(WORLD.model_copy(update={"seed": 77}), 0))
    cfg = DriftThresholds(min_events=50)
    ok = check_drift(
        workspace, same, same_text, cfg, run_name="same", n_live_events=3000, n_requests=0
    )
    bad = check_drift(
        workspace, shifted, shifted_text, cfg, run_name="shift", n_live_events=3000, n_requests=0
    )
    assert not ok.drifted, ok.reasons
    assert bad.drifted and [c.name for c in bad.checks if c.drifted] == [ITEM_JS]
    assert bad.data_docs_page and "recops_live_drift" in Path(bad.data_docs_page).read_text()


def test_cold_start_share_above_its_bound_is_drift(workspace) -> None:
    reference = generate_events(WORLD)
    summary, text = _summary(reference, _batch(WORLD, 2), cold=0.9)
    report = check_drift(
        workspace,
        summary,
        text,
        DriftThresholds(min_events=50),
        run_name="cold",
        n_live_events=3000,
        n_requests=100,
    )
    assert report.drifted and [c.name for c in report.checks if c.drifted] == ["cold_start_share"]


def _served_histories(events, requests_per_user: int, keep: int = 20):
    """A served log whose rows carry each user's last ``keep`` items, asked several times."""
    from components.monitoring.servelog import SERVED_SCHEMA, rows_to_table

    rows = []
    for n, (user, items) in enumerate(events.groupby("user_id", observed=True)["item_id"]):
        history = items.astype(str).tolist()[-keep:]
        for r in range(requests_per_user):
            rows.append(
                (f"q{n}-{r}", 0, str(user), len(history), 0, "model", "v1", [], [], history)
            )
    return rows_to_table(rows, SERVED_SCHEMA)


def test_live_popularity_comes_from_served_histories_each_pair_once() -> None:
    from components.monitoring.drift import live_item_counts, served_history_counts
    from components.monitoring.servelog import FEEDBACK_SCHEMA

    reference = generate_events(WORLD)
    lengths = reference.groupby("user_id").size().to_numpy()
    cfg = DriftThresholds(min_events=50)
    verdicts = {}
    for name, world in (("same", WORLD), ("shifted", WORLD.model_copy(update={"seed": 77}))):
        served = _served_histories(_batch(world, 3), requests_per_user=3)
        pairs = served_history_counts(served)
        # three requests per user with the same history: each (user, item) pair once
        users, histories = served["user_id"].to_pylist(), served["history"].to_pylist()
        distinct = {(u, i) for u, h in zip(users, histories, strict=True) for i in h}
        assert pairs.sum() == len(distinct)
        assert pairs.to_dict() == pd.Series([i for _, i in distinct]).value_counts().to_dict()
        counts = live_item_counts(served, FEEDBACK_SCHEMA.empty_table())  # no feedback at all
        summary, _ = drift_summary(reference["item_id"], lengths, counts, lengths, None, cfg)
        verdicts[name] = float(summary[ITEM_JS].iloc[0])
    assert verdicts["same"] <= cfg.item_popularity_js < verdicts["shifted"], verdicts
