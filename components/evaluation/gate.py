"""The champion/challenger gate: may a freshly trained model replace the serving one?

Both sides are measured on the **same, current** test split: the challenger was trained
on it, and the champion is re-scored on it with :func:`rescore_on` (its stored numbers
came from older data and are never compared). Items or users the champion's vocabulary
does not know are handled explicitly: unknown history items are dropped, unknown targets
are misses, and both are counted in the decision.

:func:`decide` promotes only when every configured rule holds
(:class:`~components.evaluation.config.GateConfig`):

1. the primary metric (default ``ndcg@10``) improves, by at least ``min_delta``
   (absolute, or relative to the reference);
2. the improvement is significant under a paired, one-sided test over per-user values
   (paired bootstrap of the mean difference, or Wilcoxon signed-rank) at ``alpha``
   (``test: none`` switches this rule off);
3. no guardrail metric (``hr@10``, ``mrr``, ``coverage@10`` by default) drops by more
   than its tolerance (absolute, or relative with ``guardrail_mode``); a guardrail that
   either side does not report is skipped (logged);
4. with no champion yet, the reference is the ``pop`` baseline trained and evaluated on
   the same split: the first model ever must beat it by the same rules.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from components.data.sequences import PAD, Vocabulary
from components.data.splits import EvalSet
from components.evaluation.config import EvalConfig, GateConfig

if TYPE_CHECKING:
    from components.evaluation.metrics import EvalResult
    from components.models.bundle import ModelBundle

log = logging.getLogger(__name__)

UNKNOWN_TARGETS = "unknown_targets"
UNKNOWN_USERS = "unknown_users"


class _Result(Protocol):
    """What the gate reads from an evaluation (``EvalResult`` satisfies it)."""

    summary: dict[str, float]
    per_user: dict[str, np.ndarray]


class GateCheck(BaseModel):
    """One rule's outcome, with a sentence a person can read."""

    model_config = ConfigDict(extra="forbid")

    name: str  # "primary", "significance", "guardrail:<metric>", "reference"
    passed: bool
    detail: str


class GateDecision(BaseModel):
    """The gate's verdict with the reasons and the numbers on both sides."""

    model_config = ConfigDict(extra="forbid")

    promote: bool
    reasons: list[str]  # why it was rejected (failed checks) or promoted (passed checks)
    primary_metric: str
    reference: Literal["champion", "baseline"] | None = None
    challenger: dict[str, float]
    champion: dict[str, float] | None = None
    baseline: dict[str, float] | None = None
    p_value: float | None = None
    #: 95 % paired-bootstrap interval of the mean per-user difference of the primary
    #: metric (challenger - reference, absolute), when both sides have per-user values
    delta_ci: tuple[float, float] | None = None
    delta: float | None = None
    delta_mode: Literal["absolute", "relative"] = "absolute"
    test: str = "bootstrap"
    n_users: int | None = None
    champion_unknown_targets: int = 0
    champion_unknown_users: int = 0
    checks: list[GateCheck] = []
    # set when the champion could not be loaded (corrupt or missing artifact): the gate
    # then compared against the baseline instead, and says so
    champion_error: str | None = None

    def table(self) -> str:
        """A small fixed-width table: metric, challenger, reference, delta; then the verdict."""
        ref = self.champion if self.reference == "champion" else self.baseline
        ref_label = self.reference or "reference"
        metrics = [self.primary_metric] + [
            m for m in sorted(self.challenger) if m != self.primary_metric and not _is_count(m)
        ]
        lines = [f"{'metric':<14}{'challenger':>12}{ref_label:>12}{'delta':>10}"]
        for metric in metrics:
            c = self.challenger.get(metric)
            r = ref.get(metric) if ref else None
            d = c - r if c is not None and r is not None else None
            lines.append(f"{metric:<14}{_fmt(c):>12}{_fmt(r):>12}{_fmt(d, signed=True):>10}")
        p = "n/a" if self.p_value is None else f"{self.p_value:.4f}"
        lines.append(f"paired {self.test} p-value: {p}")
        if self.delta_ci is not None:
            low, high = self.delta_ci
            lines.append(
                f"95% CI of the {self.primary_metric} difference: [{low:+.4f}, {high:+.4f}]"
            )
        if self.champion_unknown_targets or self.champion_unknown_users:
            lines.append(
                f"champion vocabulary misses: {self.champion_unknown_targets} test targets, "
                f"{self.champion_unknown_users} users (scored as misses)"
            )
        if self.champion_error:
            lines.append(
                f"champion not compared (compared with the baseline): {self.champion_error}"
            )
        lines.append(f"decision: {'PROMOTE' if self.promote else 'REJECT'}")
        lines.extend(f"  - {reason}" for reason in self.reasons)
        return "\n".join(lines)


def _is_count(metric: str) -> bool:
    return metric in ("n_users", UNKNOWN_TARGETS, UNKNOWN_USERS)


def _fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


# --- re-scoring a model on the current split ----------------------------------------
def _item_map(vocab: Vocabulary, target_vocab: Vocabulary) -> torch.Tensor:
    """``[n_items + 1]``: index in ``target_vocab`` of each index of ``vocab`` (0 = unknown)."""
    return torch.from_numpy(
        np.concatenate([[PAD], target_vocab.item_index(vocab.items)]).astype(np.int64)
    )


def remap_history_rows(
    histories: torch.Tensor,
    vocab: Vocabulary,
    target_vocab: Vocabulary,
    max_len: int,
    *aligned: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Left-padded ``histories [n, W]`` (indices of ``vocab``) in ``target_vocab``'s
    indices: unknown items are dropped, the remaining items shift right, rows stay left
    padded, cropped or padded to ``max_len``. Each tensor of ``aligned`` (same shape, e.g.
    event-type codes, 0 = padding) follows its items. Returns ``(histories, *aligned)``."""
    mapped = _item_map(vocab, target_vocab)[histories]
    real = mapped != PAD
    # stable sort on "is real item" moves the dropped (0) entries to the left
    order = torch.sort(real.to(torch.int8), dim=1, stable=True).indices
    rows = [mapped, *(torch.where(real, a, torch.zeros_like(a)) for a in aligned)]
    return tuple(_fit_width(r.gather(1, order), max_len) for r in rows)


def remap_eval_set(
    eval_set: EvalSet,
    vocab: Vocabulary,
    target_vocab: Vocabulary,
    max_len: int,
    *,
    users_matter: bool,
) -> tuple[EvalSet, int, int]:
    """``eval_set`` (indices of ``vocab``) expressed in ``target_vocab``'s indices.

    History items unknown to ``target_vocab`` are dropped (the remaining items shift right,
    histories stay left padded, cropped or padded to ``max_len``); unknown targets become
    0, which evaluation counts as a miss. Unknown users map to index 0; when
    ``users_matter`` (the model embeds users) their targets are made misses as well.
    Returns ``(remapped, unknown_targets, unknown_users)``; rows stay in the same order,
    so per-user results pair up with the challenger's.
    """
    item_map = _item_map(vocab, target_vocab)
    kinds = _event_codes(eval_set, vocab, target_vocab)
    if kinds is None:
        (histories,) = remap_history_rows(eval_set.histories, vocab, target_vocab, max_len)
        events = None
    else:
        histories, events = remap_history_rows(
            eval_set.histories, vocab, target_vocab, max_len, kinds
        )
    targets = item_map[eval_set.targets]
    unknown_targets = int(((targets == PAD) & (eval_set.targets != PAD)).sum())
    user_tokens = [vocab.users[int(u)] for u in eval_set.users]
    users = target_vocab.user_index(user_tokens)
    unknown_user_rows = users < 0
    if users_matter:
        targets = torch.where(torch.from_numpy(unknown_user_rows), PAD, targets)
    users = np.where(unknown_user_rows, 0, users)
    remapped = EvalSet(users, histories, targets, events, eval_set.target_events)
    return remapped, unknown_targets, int(unknown_user_rows.sum())


def _event_codes(
    eval_set: EvalSet, vocab: Vocabulary, target_vocab: Vocabulary
) -> torch.Tensor | None:
    """The history event types in ``target_vocab``'s indices, aligned with
    ``eval_set.histories`` (None when either side has no event types)."""
    if eval_set.events is None or not target_vocab.event_types:
        return None
    kind_map = torch.from_numpy(
        np.concatenate([[PAD], target_vocab.event_index(vocab.event_types)]).astype(np.int64)
    )
    return kind_map[eval_set.events]


def _fit_width(histories: torch.Tensor, max_len: int) -> torch.Tensor:
    width = histories.shape[1]
    if width >= max_len:
        return histories[:, width - max_len :].contiguous()
    return torch.nn.functional.pad(histories, (max_len - width, 0), value=PAD)


def _users_matter(bundle: ModelBundle) -> bool:
    """Whether the bundle's model scores through a user embedding (graph models)."""
    flag = getattr(bundle, "uses_users", None)
    if flag is not None:
        return bool(flag)
    return getattr(bundle.model, "input_kind", None) == "interaction_graph"


def rescore_on(
    bundle: ModelBundle,
    eval_set: EvalSet,
    vocab: Vocabulary,
    eval_cfg: EvalConfig,
    device: str = "cpu",
) -> EvalResult:
    """Evaluate any stored bundle on the current split (``eval_set`` in ``vocab`` indices).

    The split is remapped through raw tokens into the bundle's own vocabulary (see
    :func:`remap_eval_set`); the result's summary gains ``unknown_targets`` and
    ``unknown_users`` counts, which :func:`decide` reports.
    """
    from components.evaluation.metrics import evaluate

    remapped, unknown_targets, unknown_users = remap_eval_set(
        eval_set, vocab, bundle.vocab, bundle.max_len, users_matter=_users_matter(bundle)
    )
    if unknown_targets or unknown_users:
        log.info(
            "re-scoring %s: %d targets and %d users unknown to its vocabulary (misses)",
            bundle.model_name,
            unknown_targets,
            unknown_users,
        )
    result = evaluate(
        bundle,
        remapped,
        ks=eval_cfg.ks,
        exclude_seen=eval_cfg.exclude_seen,
        batch_size=eval_cfg.batch_size,
        device=device,
    )
    result.summary[UNKNOWN_TARGETS] = float(unknown_targets)
    result.summary[UNKNOWN_USERS] = float(unknown_users)
    return result


# --- the decision --------------------------------------------------------------------
def paired_p_value(challenger: np.ndarray, reference: np.ndarray, cfg: GateConfig) -> float:
    """One-sided p-value of "challenger > reference" over paired per-user values.

    ``bootstrap``: resample users with replacement ``cfg.bootstrap_samples`` times from the
    differences shifted to mean 0 (the null), p = share of resampled means >= the observed
    mean (with the +1 correction). ``wilcoxon``: scipy's signed-rank test, zeros dropped.
    No difference at all gives p = 1.
    """
    diff = np.asarray(challenger, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    if diff.size == 0 or not np.any(diff):
        return 1.0
    if cfg.test == "wilcoxon":
        from scipy.stats import wilcoxon

        return float(wilcoxon(diff, alternative="greater", zero_method="wilcox").pvalue)
    observed = diff.mean()
    null = diff - observed
    rng = np.random.default_rng(cfg.seed)
    n = diff.size
    chunk = max(1, 4_000_000 // n)  # bound memory: chunk x n indices at a time
    exceed = 0
    done = 0
    while done < cfg.bootstrap_samples:
        rows = min(chunk, cfg.bootstrap_samples - done)
        means = null[rng.integers(0, n, size=(rows, n))].mean(axis=1)
        exceed += int((means >= observed).sum())
        done += rows
    return (exceed + 1) / (cfg.bootstrap_samples + 1)


def paired_ci(
    challenger: np.ndarray, reference: np.ndarray, cfg: GateConfig, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean paired difference (users resampled with
    replacement ``cfg.bootstrap_samples`` times, ``cfg.seed``); None without pairs."""
    if len(challenger) == 0 or len(challenger) != len(reference):
        return None
    diff = np.asarray(challenger, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    rng = np.random.default_rng(cfg.seed + 1)
    n = diff.size
    chunk = max(1, 4_000_000 // n)
    means: list[np.ndarray] = []
    done = 0
    while done < cfg.bootstrap_samples:
        rows = min(chunk, cfg.bootstrap_samples - done)
        means.append(diff[rng.integers(0, n, size=(rows, n))].mean(axis=1))
        done += rows
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.concatenate(means), [tail, 100 - tail])
    return float(low), float(high)


def _delta(challenger: float, reference: float, mode: str) -> float:
    if mode == "absolute":
        return challenger - reference
    if reference == 0:
        return math.inf if challenger > 0 else 0.0
    return (challenger - reference) / abs(reference)


def _primary_check(c: float, r: float, cfg: GateConfig) -> tuple[GateCheck, float]:
    delta = _delta(c, r, cfg.delta_mode)
    unit = "" if cfg.delta_mode == "absolute" else " (relative)"
    passed = c > r and delta >= cfg.min_delta
    verdict = "improves" if passed else "does not improve enough"
    detail = (
        f"{cfg.primary_metric} {verdict}: {c:.4f} vs {r:.4f}, delta {delta:+.4f}{unit}"
        f" (needs > 0 and >= {cfg.min_delta:g})"
    )
    return GateCheck(name="primary", passed=passed, detail=detail), delta


def _significance_check(
    challenger: _Result, reference: _Result, cfg: GateConfig
) -> tuple[GateCheck, float | None]:
    metric = cfg.primary_metric
    if cfg.test == "none":
        return GateCheck(
            name="significance", passed=True, detail="significance test disabled (gate.test=none)"
        ), None
    c_users, r_users = challenger.per_user.get(metric), reference.per_user.get(metric)
    if c_users is None or r_users is None:
        return GateCheck(
            name="significance",
            passed=False,
            detail=f"no per-user {metric} values on both sides; cannot run the paired test",
        ), None
    if len(c_users) != len(r_users):
        return GateCheck(
            name="significance",
            passed=False,
            detail=f"per-user {metric} arrays differ in length ({len(c_users)} vs "
            f"{len(r_users)}): not the same test users",
        ), None
    p = paired_p_value(c_users, r_users, cfg)
    passed = p < cfg.alpha
    word = "significant" if passed else "not significant"
    detail = f"improvement {word}: paired {cfg.test} p = {p:.4f} (alpha {cfg.alpha:g}, n = {len(c_users)})"
    return GateCheck(name="significance", passed=passed, detail=detail), p


def _guardrail_checks(
    challenger: dict[str, float], reference: dict[str, float], cfg: GateConfig
) -> list[GateCheck]:
    checks = []
    for metric, tolerance in cfg.guardrails.items():
        if metric not in challenger or metric not in reference:
            log.info("gate: guardrail %s not reported on both sides; skipped", metric)
            continue
        drop = reference[metric] - challenger[metric]
        if cfg.guardrail_mode == "relative":
            drop = drop / abs(reference[metric]) if reference[metric] else 0.0
        passed = drop <= tolerance
        unit = "" if cfg.guardrail_mode == "absolute" else " relative"
        detail = (
            f"guardrail {metric}: {challenger[metric]:.4f} vs {reference[metric]:.4f} "
            f"(drop {max(drop, 0.0):.4f}{unit}, tolerance {tolerance:g})"
        )
        checks.append(GateCheck(name=f"guardrail:{metric}", passed=passed, detail=detail))
    return checks


def decide(
    challenger: _Result,
    champion: _Result | None,
    baseline: _Result | None,
    cfg: GateConfig,
) -> GateDecision:
    """Promote the challenger only if it beats the reference by every rule in ``cfg``.

    The reference is the champion (re-scored on the current split, see
    :func:`rescore_on`) or, when there is none yet, the ``baseline`` (``pop``) result on
    the same split. With neither, the challenger is rejected: the first model must beat
    the baseline.
    """
    reference, ref_name = (champion, "champion") if champion is not None else (baseline, "baseline")
    base = dict(
        primary_metric=cfg.primary_metric,
        challenger=_plain(challenger.summary),
        champion=_plain(champion.summary) if champion is not None else None,
        baseline=_plain(baseline.summary) if baseline is not None else None,
        delta_mode=cfg.delta_mode,
        test=cfg.test,
        n_users=len(next(iter(challenger.per_user.values()), [])) or None,
        champion_unknown_targets=int(champion.summary.get(UNKNOWN_TARGETS, 0)) if champion else 0,
        champion_unknown_users=int(champion.summary.get(UNKNOWN_USERS, 0)) if champion else 0,
    )
    if reference is None:
        check = GateCheck(
            name="reference",
            passed=False,
            detail=f"no champion yet and no {cfg.baseline!r} baseline result: "
            f"the first model must beat {cfg.baseline!r} on the same split",
        )
        return GateDecision(promote=False, reasons=[check.detail], checks=[check], **base)
    metric = cfg.primary_metric
    if metric not in challenger.summary or metric not in reference.summary:
        check = GateCheck(
            name="primary",
            passed=False,
            detail=f"primary metric {metric!r} missing from the challenger or the {ref_name}",
        )
        return GateDecision(
            promote=False, reasons=[check.detail], checks=[check], reference=ref_name, **base
        )
    primary, delta = _primary_check(challenger.summary[metric], reference.summary[metric], cfg)
    significance, p_value = _significance_check(challenger, reference, cfg)
    checks = [primary, significance, *_guardrail_checks(challenger.summary, reference.summary, cfg)]
    if ref_name == "baseline":
        checks = [
            c.model_copy(update={"detail": f"vs {cfg.baseline} baseline: {c.detail}"})
            for c in checks
        ]
    promote = all(c.passed for c in checks)
    reasons = [c.detail for c in checks if c.passed == promote]
    c_users, r_users = challenger.per_user.get(metric), reference.per_user.get(metric)
    ci = None if c_users is None or r_users is None else paired_ci(c_users, r_users, cfg)
    return GateDecision(
        promote=promote,
        reasons=reasons,
        checks=checks,
        reference=ref_name,
        p_value=p_value,
        delta_ci=ci,
        delta=None if math.isinf(delta) else delta,
        **base,
    )


def _plain(summary: dict[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in summary.items()}
