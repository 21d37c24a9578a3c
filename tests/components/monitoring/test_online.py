"""Online metrics on hand-built logs: the hit-rate and its interval are known in advance."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from components.monitoring.online import metrics_by_version, unknown_request_ids, wilson
from components.monitoring.servelog import FEEDBACK_SCHEMA, SERVED_SCHEMA, rows_to_table

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _us(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1_000_000)


def _served(rows: list[tuple]) -> object:
    # (request_id, minute, user, history_len, unknown, source, version, items)
    return rows_to_table(
        [
            (r, _us(m), u, h, x, s, v, items, [1.0] * len(items), [])
            for r, m, u, h, x, s, v, items in rows
        ],
        SERVED_SCHEMA,
    )


def _feedback(rows: list[tuple]) -> object:
    # (user, item, minute, request_id)
    return rows_to_table(
        [(u, i, _us(m), "click", None, rid, _us(m)) for u, i, m, rid in rows], FEEDBACK_SCHEMA
    )


def test_hand_built_log_gives_the_known_hit_rate() -> None:
    served = _served(
        [
            ("r1", 0, "u1", 3, 0, "model", "v1", ["a", "b", "c"]),  # hit by user+window (b)
            ("r2", 0, "u2", 2, 1, "model", "v1", ["a", "d"]),  # miss: clicked an item not served
            ("r3", 0, "u3", 0, 0, "cold_start", "v1", ["a", "b"]),  # miss: click after the window
            ("r4", 0, None, 4, 2, "model", "v1", ["e", "f"]),  # hit by request id only
            (
                "r5",
                0,
                "u5",
                1,
                0,
                "model",
                "v1",
                ["a", "g", "h"],
            ),  # miss: the click is on h, third, beyond k=2
            ("r6", 0, None, 1, 0, "model", "v1", ["a"]),  # not joinable: no user, no feedback
            ("r7", 0, "u7", 1, 0, "model", "v1", ["c"]),  # click before serving: miss
            ("r8", 1430, "u8", 1, 0, "model", "v1", ["a"]),  # window still open: not counted
            ("s1", 0, "u1", 3, 0, "model", "v2", ["z"]),  # other version
        ]
    )
    feedback = _feedback(
        [
            ("u1", "b", 5, None),
            ("u2", "x", 5, None),
            ("u3", "a", 60 * 25, None),  # 25 h later, window is 24 h
            ("anon", "f", 3, "r4"),
            ("u5", "h", 5, None),  # third item: outside top-2
            ("u7", "c", -5, None),
            ("u9", "a", 5, "no-such-request"),
        ]
    )
    as_of = T0 + timedelta(days=1, minutes=1)
    by_version = {
        m.model_version: m
        for m in metrics_by_version(
            served,
            feedback,
            k=2,
            window=timedelta(hours=24),
            as_of=as_of,
            catalogue_sizes={"v1": 10},
        )
    }
    v1 = by_version["v1"]
    assert v1.requests == 8
    assert v1.hit_rate.hits == 2 and v1.hit_rate.n == 6  # r1, r4 of r1,r2,r3,r4,r5,r7
    assert v1.hit_rate.value == pytest.approx(2 / 6)
    expected = wilson(2, 6)
    assert (v1.hit_rate.low, v1.hit_rate.high) == (expected.low, expected.high)
    assert v1.open_lists == 1
    assert v1.cold_start_share == pytest.approx(1 / 8)
    assert v1.unknown_item_share == pytest.approx(3 / 13)
    assert v1.requests_with_unknown_items == 2
    assert v1.distinct_items_served == 7  # a b c d e f g (top-2 of each list)
    assert v1.coverage == pytest.approx(0.7)
    assert by_version["v2"].coverage is None and by_version["v2"].hit_rate.n == 1
    assert unknown_request_ids(served, feedback) == 1


def test_wilson_interval_matches_the_textbook_value() -> None:
    share = wilson(8, 10, 0.95)
    # Wilson (1927) / Agresti–Coull table: 8/10 -> [0.490, 0.943]
    assert share.low == pytest.approx(0.4902, abs=1e-3) and share.high == pytest.approx(
        0.9433, abs=1e-3
    )
    assert wilson(0, 0).value is None
