"""The online comparison of a champion and its challenger, and the decision from it.

Inputs are the serving log (what each version answered, by request id), the feedback
log (events naming a request id: a *hit* when the item is in that list's top-k) and the
proxy's counters (errors, latency per arm). What the test is depends on the mode:

* **shadow** - both versions answered the *same* requests (the client saw the
  champion's list, the challenger's was logged under the same id). Hit-rate@k is paired
  per request: an exact one-sided McNemar test on the discordant pairs (challenger hit
  and champion missed, ``b``; the reverse, ``c``; p = P(Binom(b + c, 1/2) >= b)), and a
  Wald interval of the paired difference. The challenger's shadow hit-rate is
  counterfactual (its list was never shown; the feedback answers the champion's list),
  which is the standard offline-replay reading of a shadow.
* **canary** - the arms answered different users: a one-sided two-proportion z-test
  (pooled) and a Wald interval of the difference.

Each arm's hit-rate carries its Wilson interval. The decision is a fixed-horizon test:
``undecided`` until each arm has ``min_lists`` lists with feedback, then ``promote`` when
the challenger is better at level ``alpha`` (and its error rate is within the canary
limit), else ``retire``. Looking repeatedly before the horizon would inflate the false
promotion rate; ``recops bench online`` measures both error rates by simulation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import binom, norm

from components.monitoring.online import Share, explicit_hit_ids, wilson

Decision = Literal["promote", "retire", "undecided"]


@dataclass(frozen=True)
class Arm:
    """One side of the comparison."""

    version: str
    lists: int  # lists it answered (logged)
    hit_rate: Share  # over its lists that received feedback naming their request id
    requests: int | None = None  # the proxy's count (None without proxy stats)
    errors: int | None = None
    error_rate: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None


@dataclass(frozen=True)
class Mirror:
    """What the proxy did with the shadow's copies: sent, dropped (queue full: the shadow
    could not keep up), timed out, failed. The paired test sees only copies answered."""

    mirrored: int
    dropped: int
    timeouts: int
    errors: int
    stale: int = 0  # queued, then dropped: live traffic never quiet enough (max_live)

    @property
    def drop_share(self) -> float | None:
        """Copies never sent to the shadow (queue full or stale) over all copies made."""
        made = self.mirrored + self.dropped
        return (self.dropped + self.stale) / made if made else None

    @classmethod
    def from_stats(cls, stats: dict[str, Any]) -> Mirror | None:
        """From the proxy's split stats (None before a shadow's first copy)."""
        if stats.get("mode") != "shadow":
            return None
        return cls(
            int(stats.get("mirrored", 0)),
            int(stats.get("dropped", 0)),
            int(stats.get("mirror_timeouts", 0)),
            int(stats.get("mirror_errors", 0)),
            int(stats.get("mirror_stale", 0)),
        )

    def describe(self) -> str:
        share = self.drop_share
        return (
            f"mirror: {self.mirrored + self.dropped} copies, {self.dropped + self.stale} "
            f"dropped ({'n/a' if share is None else f'{share:.1%}'}; {self.stale} stale), "
            f"{self.timeouts} timed out, {self.errors} failed"
        )


@dataclass(frozen=True)
class OnlineComparison:
    """Both arms, the test, and the decision with its reasons."""

    mode: str
    k: int
    alpha: float
    champion: Arm
    challenger: Arm
    test: str
    p_value: float | None
    delta: float | None  # challenger - champion hit-rate@k
    delta_ci: tuple[float, float] | None
    n: int  # pairs (shadow) or the smaller arm's lists with feedback (canary)
    agreement: float | None  # mean top-k overlap on the same requests (shadow)
    decision: Decision
    reasons: list[str] = field(default_factory=list)
    mirror: Mirror | None = None  # shadow: the proxy's copies (drops, timeouts)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.mirror is not None:
            out["mirror"]["drop_share"] = self.mirror.drop_share
        return out

    def table(self) -> str:
        """A fixed-width table for people."""
        rows = [f"{'':<22}{'champion':>14}{'challenger':>14}"]
        arms = (self.champion, self.challenger)
        rows.append(f"{'version':<22}" + "".join(f"{a.version[:13]:>14}" for a in arms))
        rows.append(f"{'lists logged':<22}" + "".join(f"{a.lists:>14}" for a in arms))
        rows.append(f"{'lists with feedback':<22}" + "".join(f"{a.hit_rate.n:>14}" for a in arms))
        rows.append(
            f"{f'hit-rate@{self.k}':<22}" + "".join(f"{_share(a.hit_rate):>14}" for a in arms)
        )
        rows.append(f"{'requests (proxy)':<22}" + "".join(f"{_num(a.requests):>14}" for a in arms))
        rows.append(f"{'error rate':<22}" + "".join(f"{_pct(a.error_rate):>14}" for a in arms))
        rows.append(f"{'p50 / p95 ms':<22}" + "".join(f"{_lat(a):>14}" for a in arms))
        if self.agreement is not None:
            rows.append(f"top-{self.k} agreement (same requests): {self.agreement:.3f}")
        if self.mirror is not None:
            rows.append(self.mirror.describe())
        p = "n/a" if self.p_value is None else f"{self.p_value:.4f}"
        rows.append(f"{self.test}: n={self.n}, p={p} (one-sided, alpha {self.alpha})")
        if self.delta is not None:
            ci = self.delta_ci
            span = f" 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
            rows.append(f"hit-rate difference {self.delta:+.4f}{span}")
        rows.append(f"decision: {self.decision.upper()}")
        rows.extend(f"  - {r}" for r in self.reasons)
        return "\n".join(rows)


def _share(s: Share) -> str:
    if s.value is None:
        return "n/a"
    return f"{s.value:.3f}[{s.low:.2f},{s.high:.2f}]"


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _lat(arm: Arm) -> str:
    if arm.p50_ms is None:
        return "-"
    return f"{arm.p50_ms:.1f}/{arm.p95_ms or 0:.1f}"


# --- the statistics --------------------------------------------------------------------
def mcnemar_greater(b: int, c: int) -> float:
    """Exact one-sided McNemar p-value that the challenger wins more discordant pairs."""
    if b + c == 0:
        return 1.0
    return float(binom.sf(b - 1, b + c, 0.5))


def paired_delta_ci(b: int, c: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Wald interval of a paired difference of proportions ((b - c) / n)."""
    if n == 0:
        return None
    z = float(norm.ppf(0.5 + level / 2))
    d = (b - c) / n
    var = max(0.0, ((b + c) / n - d * d) / n)
    return d - z * math.sqrt(var), d + z * math.sqrt(var)


def two_proportion_greater(h1: int, n1: int, h2: int, n2: int) -> float:
    """One-sided pooled z-test that proportion 2 (challenger) exceeds proportion 1."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (h1 + h2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return float(norm.sf((h2 / n2 - h1 / n1) / se))


def two_sample_ci(
    h1: int, n1: int, h2: int, n2: int, level: float = 0.95
) -> tuple[float, float] | None:
    """Wald interval of ``h2/n2 - h1/n1``."""
    if n1 == 0 or n2 == 0:
        return None
    z = float(norm.ppf(0.5 + level / 2))
    p1, p2 = h1 / n1, h2 / n2
    half = z * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return p2 - p1 - half, p2 - p1 + half


# --- from the logs ---------------------------------------------------------------------
def _arm_rows(served: pa.Table, version: str) -> pa.Table:
    return served.filter(pc.equal(served["model_version"], version))


def _with_feedback(rows: pa.Table, feedback: pa.Table) -> np.ndarray:
    named = (
        feedback["request_id"].drop_null().unique()
        if feedback.num_rows
        else pa.array([], pa.string())
    )
    ids = pc.is_in(rows["request_id"], value_set=named)
    return np.asarray(pc.fill_null(ids, False).to_numpy(zero_copy_only=False), dtype=bool)


def _hits(rows: pa.Table, feedback: pa.Table, k: int) -> np.ndarray:
    hit_ids = explicit_hit_ids(rows, feedback, k)
    is_hit = pc.fill_null(pc.is_in(rows["request_id"], hit_ids), False)
    return np.asarray(is_hit.to_numpy(zero_copy_only=False), dtype=bool)


def top_k_agreement(champion: pa.Table, challenger: pa.Table, k: int) -> float | None:
    """Mean share of the champion's top-k that the challenger also put in its top-k, over
    requests both answered (same request id); None when there are none."""
    a = _top_pairs(champion, k)
    b = _top_pairs(challenger, k)
    both = pc.is_in(a["request_id"], b["request_id"].unique())
    a = a.filter(both)
    if a.num_rows == 0:
        return None
    common = a.join(b, ["request_id", "item_id"], join_type="inner")
    return common.num_rows / a.num_rows


def _top_pairs(rows: pa.Table, k: int) -> pa.Table:
    top = pc.list_slice(rows["items"], 0, k)
    return pa.table(
        {
            "request_id": pc.take(rows["request_id"], pc.list_parent_indices(top)),
            "item_id": pc.list_flatten(top),
        }
    )


def compare(
    served: pa.Table,
    feedback: pa.Table,
    *,
    mode: str,
    champion: str,
    challenger: str,
    k: int,
    alpha: float,
    min_lists: int,
    proxy: dict[str, Any] | None = None,
    max_error_rate: float = 1.0,
) -> OnlineComparison:
    """Compare the two versions' logged answers (``served``: the serving log since the
    challenger was attached; ``feedback``: feedback events) and decide."""
    rows_a, rows_b = _arm_rows(served, champion), _arm_rows(served, challenger)
    if mode == "shadow":
        test, p, delta, ci, n, share_a, share_b = _paired(rows_a, rows_b, feedback, k)
        agreement = top_k_agreement(rows_a, rows_b, k)
    else:
        test, p, delta, ci, n, share_a, share_b = _two_sample(rows_a, rows_b, feedback, k)
        agreement = None
    stats = proxy or {}
    arm_a = _arm(champion, rows_a.num_rows, share_a, stats.get("champion"))
    arm_b = _arm(challenger, rows_b.num_rows, share_b, stats.get("challenger"))
    decision, reasons = decide(
        p, delta, n, arm_b, alpha=alpha, min_lists=min_lists, max_error_rate=max_error_rate
    )
    return OnlineComparison(
        mode,
        k,
        alpha,
        arm_a,
        arm_b,
        test,
        p,
        delta,
        ci,
        n,
        agreement,
        decision,
        reasons,
        Mirror.from_stats(stats),
    )


def _arm(version: str, lists: int, share: Share, proxy: dict[str, Any] | None) -> Arm:
    proxy = proxy or {}
    return Arm(
        version,
        lists,
        share,
        proxy.get("requests"),
        proxy.get("errors"),
        proxy.get("error_rate"),
        proxy.get("p50_ms"),
        proxy.get("p95_ms"),
    )


Tested = tuple[str, float | None, float | None, tuple[float, float] | None, int, Share, Share]


def _paired(rows_a: pa.Table, rows_b: pa.Table, feedback: pa.Table, k: int) -> Tested:
    fa, fb = (
        rows_a.filter(_with_feedback(rows_a, feedback)),
        rows_b.filter(_with_feedback(rows_b, feedback)),
    )
    common = pc.is_in(fa["request_id"], fb["request_id"].unique())
    fa = fa.filter(common)
    fb = fb.filter(pc.is_in(fb["request_id"], fa["request_id"].unique()))
    # align the two arms by request id
    order_a = pc.sort_indices(fa["request_id"])
    order_b = pc.sort_indices(fb["request_id"])
    fa, fb = fa.take(order_a), fb.take(order_b)
    if fa.num_rows != fb.num_rows:  # a request logged twice by one arm: keep the pairs only
        fb = fb.filter(pc.is_in(fb["request_id"], fa["request_id"]))
        fa = fa.filter(pc.is_in(fa["request_id"], fb["request_id"]))
    ha, hb = _hits(fa, feedback, k), _hits(fb, feedback, k)
    n = len(ha)
    b = int((hb & ~ha).sum())
    c = int((ha & ~hb).sum())
    delta = (b - c) / n if n else None
    return (
        "exact McNemar (paired by request id)",
        mcnemar_greater(b, c) if n else None,
        delta,
        paired_delta_ci(b, c, n),
        n,
        wilson(int(ha.sum()), n),
        wilson(int(hb.sum()), n),
    )


def _two_sample(rows_a: pa.Table, rows_b: pa.Table, feedback: pa.Table, k: int) -> Tested:
    fa = rows_a.filter(_with_feedback(rows_a, feedback))
    fb = rows_b.filter(_with_feedback(rows_b, feedback))
    ha, hb = _hits(fa, feedback, k), _hits(fb, feedback, k)
    n1, n2, h1, h2 = len(ha), len(hb), int(ha.sum()), int(hb.sum())
    return (
        "two-proportion z-test (users split)",
        two_proportion_greater(h1, n1, h2, n2) if n1 and n2 else None,
        h2 / n2 - h1 / n1 if n1 and n2 else None,
        two_sample_ci(h1, n1, h2, n2),
        min(n1, n2),
        wilson(h1, n1),
        wilson(h2, n2),
    )


def decide(
    p_value: float | None,
    delta: float | None,
    n: int,
    challenger: Arm,
    *,
    alpha: float,
    min_lists: int,
    max_error_rate: float,
) -> tuple[Decision, list[str]]:
    """The fixed-horizon decision and its reasons."""
    if challenger.error_rate is not None and challenger.error_rate > max_error_rate:
        return "retire", [
            f"challenger error rate {challenger.error_rate:.2%} above {max_error_rate:.2%}"
        ]
    if n < min_lists or p_value is None or delta is None:
        return "undecided", [f"{n} lists with feedback per arm; {min_lists} needed to decide"]
    if p_value < alpha and delta > 0:
        return "promote", [f"challenger hit-rate higher by {delta:+.4f} (p={p_value:.4f})"]
    return "retire", [f"no significant improvement (delta {delta:+.4f}, p={p_value:.4f})"]
