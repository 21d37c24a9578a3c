"""The champion/challenger gate: decisions on hand-built per-user results, and remapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.sequences import Vocabulary
from components.data.splits import EvalSet
from components.evaluation.config import GateConfig
from components.evaluation.gate import GateDecision, decide, paired_p_value, remap_eval_set
from components.evaluation.metrics import EvalResult

N_USERS = 400


def result(ndcg: np.ndarray, **summary_overrides: float) -> EvalResult:
    """An EvalResult whose per-user ndcg@10 is ``ndcg``; hr/mrr follow it, coverage 0.5."""
    ndcg = np.clip(ndcg, 0.0, 1.0)
    per_user = {"ndcg@10": ndcg, "hr@10": (ndcg > 0).astype(float), "mrr": ndcg}
    summary = {name: float(values.mean()) for name, values in per_user.items()}
    summary["coverage@10"] = 0.5
    summary["n_users"] = float(len(ndcg))
    summary.update(summary_overrides)
    return EvalResult(summary, per_user)


@pytest.fixture
def base_scores() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 0.4, N_USERS)


def test_clearly_better_challenger_is_promoted(base_scores: np.ndarray) -> None:
    champion = result(base_scores)
    challenger = result(base_scores + 0.1)
    decision = decide(challenger, champion, None, GateConfig())
    assert decision.promote
    assert decision.reference == "champion"
    assert decision.p_value is not None and decision.p_value < 0.01
    assert decision.delta == pytest.approx(
        challenger.summary["ndcg@10"] - champion.summary["ndcg@10"]
    )
    assert all(check.passed for check in decision.checks)


def test_equal_challenger_is_rejected_with_reason(base_scores: np.ndarray) -> None:
    decision = decide(result(base_scores), result(base_scores.copy()), None, GateConfig())
    assert not decision.promote
    assert any("ndcg@10 does not improve" in r for r in decision.reasons)
    assert decision.p_value == 1.0


def test_worse_challenger_is_rejected(base_scores: np.ndarray) -> None:
    decision = decide(result(base_scores - 0.05), result(base_scores), None, GateConfig())
    assert not decision.promote
    assert {c.name for c in decision.checks if not c.passed} >= {"primary", "significance"}


def test_noisy_tiny_improvement_fails_significance_only(base_scores: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, 0.15, N_USERS)
    noise -= noise.mean() - 0.002  # mean gain 0.002, spread 0.15
    champion = result(np.full(N_USERS, 0.5))
    challenger = result(0.5 + noise)
    decision = decide(challenger, champion, None, GateConfig(guardrails={}))
    assert not decision.promote
    failed = [c.name for c in decision.checks if not c.passed]
    assert failed == ["significance"]
    assert decision.p_value is not None and decision.p_value > 0.05
    assert "not significant" in decision.reasons[0]


def test_wilcoxon_test_agrees_on_clear_and_noisy_cases(base_scores: np.ndarray) -> None:
    cfg = GateConfig(test="wilcoxon")
    assert decide(result(base_scores + 0.1), result(base_scores), None, cfg).promote
    rng = np.random.default_rng(2)
    flip = base_scores + rng.choice([-0.01, 0.01], N_USERS)
    assert not decide(result(flip), result(base_scores), None, cfg).promote


def test_guardrail_breach_rejects_even_when_primary_improves(base_scores: np.ndarray) -> None:
    champion = result(base_scores, **{"coverage@10": 0.60})
    challenger = result(base_scores + 0.1, **{"coverage@10": 0.30})
    decision = decide(challenger, champion, None, GateConfig())
    assert not decision.promote
    assert [c.name for c in decision.checks if not c.passed] == ["guardrail:coverage@10"]
    assert "coverage@10" in decision.reasons[0]


def test_guardrail_within_tolerance_passes(base_scores: np.ndarray) -> None:
    champion = result(base_scores, **{"coverage@10": 0.60})
    challenger = result(base_scores + 0.1, **{"coverage@10": 0.57})  # drop 0.03 <= 0.05
    assert decide(challenger, champion, None, GateConfig()).promote


def test_relative_min_delta(base_scores: np.ndarray) -> None:
    champion = result(base_scores)
    challenger = result(base_scores * 1.05)  # +5% relative, consistent per user
    strict = GateConfig(min_delta=0.10, delta_mode="relative")
    lenient = GateConfig(min_delta=0.02, delta_mode="relative", guardrails={})
    rejected = decide(challenger, champion, None, strict)
    assert not rejected.promote and rejected.delta == pytest.approx(0.05, rel=1e-6)
    assert decide(challenger, champion, None, lenient).promote


def test_first_model_must_beat_pop_baseline(base_scores: np.ndarray) -> None:
    pop = result(base_scores)
    better = decide(result(base_scores + 0.1), None, pop, GateConfig())
    assert better.promote and better.reference == "baseline"
    assert better.baseline is not None and better.champion is None
    worse = decide(result(base_scores - 0.1), None, pop, GateConfig())
    assert not worse.promote
    assert all(r.startswith("vs pop baseline") for r in worse.reasons)


def test_first_model_without_baseline_is_rejected(base_scores: np.ndarray) -> None:
    decision = decide(result(base_scores + 0.1), None, None, GateConfig())
    assert not decision.promote
    assert "must beat 'pop'" in decision.reasons[0]


def test_mismatched_users_cannot_be_paired(base_scores: np.ndarray) -> None:
    decision = decide(result(base_scores + 0.1), result(base_scores[:-10]), None, GateConfig())
    assert not decision.promote
    assert any("not the same test users" in r for r in decision.reasons)


def test_bootstrap_p_value_is_calibrated_roughly() -> None:
    rng = np.random.default_rng(5)
    cfg = GateConfig(bootstrap_samples=1000)
    null_ps = [paired_p_value(rng.normal(0, 1, 200), rng.normal(0, 1, 200), cfg) for _ in range(40)]
    # under the null, p-values are spread out, not piled near 0
    assert np.mean(np.array(null_ps) < 0.05) <= 0.2
    assert np.median(null_ps) > 0.2


def test_decision_table_and_json_round_trip(base_scores: np.ndarray) -> None:
    decision = decide(result(base_scores + 0.1), result(base_scores), None, GateConfig())
    table = decision.table()
    assert "ndcg@10" in table and "champion" in table and "PROMOTE" in table
    assert GateDecision.model_validate_json(decision.model_dump_json()) == decision


def test_remap_eval_set_drops_unknown_history_and_counts_unknowns() -> None:
    current = Vocabulary(users=("u1", "u2", "u3"), items=("a", "b", "c", "d"))
    old = Vocabulary(users=("u1", "u2"), items=("b", "c", "z"))  # no "a", no "d", no "u3"
    eval_set = EvalSet(
        users=np.array([0, 1, 2]),
        histories=torch.tensor(
            [[0, 1, 2, 3], [0, 0, 2, 4], [1, 1, 3, 2]]
        ),  # a b c | - - b d | a a c b
        targets=torch.tensor([2, 4, 3]),  # b, d (unknown), c
    )
    remapped, unknown_targets, unknown_users = remap_eval_set(
        eval_set, current, old, max_len=4, users_matter=False
    )
    # old indices: b=1, c=2; unknown items drop out and histories stay left padded
    assert remapped.histories.tolist() == [[0, 0, 1, 2], [0, 0, 0, 1], [0, 0, 2, 1]]
    assert remapped.targets.tolist() == [1, 0, 2]
    assert (unknown_targets, unknown_users) == (1, 1)
    assert remapped.users.tolist() == [0, 1, 0]
    with_users = remap_eval_set(eval_set, current, old, max_len=3, users_matter=True)[0]
    assert with_users.targets.tolist() == [1, 0, 0]  # unknown user u3 is a miss
    assert with_users.histories.shape == (3, 3)


def test_significance_rule_can_be_switched_off(base_scores: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    noisy = base_scores + rng.normal(0.002, 0.15, N_USERS)
    noisy += 0.002 - (noisy - base_scores).mean()
    cfg = GateConfig(test="none", guardrails={})
    decision = decide(result(noisy), result(base_scores), None, cfg)
    assert decision.promote and decision.p_value is None


def test_relative_guardrail_tolerance(base_scores: np.ndarray) -> None:
    champion = result(base_scores, **{"coverage@10": 0.50})
    challenger = result(base_scores + 0.1, **{"coverage@10": 0.46})  # -0.04 = -8% relative
    lenient = GateConfig(guardrails={"coverage@10": 0.10}, guardrail_mode="relative")
    strict = GateConfig(guardrails={"coverage@10": 0.05}, guardrail_mode="relative")
    assert decide(challenger, champion, None, lenient).promote
    rejected = decide(challenger, champion, None, strict)
    assert not rejected.promote and "0.0800 relative" in rejected.reasons[0]


def test_ci_of_the_difference_covers_the_mean_and_shrinks_with_more_users() -> None:
    from components.evaluation.gate import paired_ci

    rng = np.random.default_rng(0)
    small = rng.normal(0.02, 0.1, size=200)
    large = rng.normal(0.02, 0.1, size=5000)
    cfg = GateConfig()
    low_s, high_s = paired_ci(small, np.zeros_like(small), cfg)
    low_l, high_l = paired_ci(large, np.zeros_like(large), cfg)
    assert low_s < small.mean() < high_s
    assert low_l < large.mean() < high_l
    assert (high_l - low_l) < 0.5 * (high_s - low_s)
    assert low_l > 0  # 5000 users: a real +0.02 is clearly above zero
    # the bound is roughly mean +- 1.96 standard errors
    assert high_l - low_l == pytest.approx(2 * 1.96 * large.std() / np.sqrt(large.size), rel=0.15)


def test_decision_carries_the_ci_and_prints_it(base_scores: np.ndarray) -> None:
    decision = decide(result(base_scores + 0.05), result(base_scores), None, GateConfig())
    assert decision.delta_ci is not None
    low, high = decision.delta_ci
    assert low <= 0.05 + 1e-9 and high >= 0.05 - 1e-9
    assert "95% CI of the ndcg@10 difference: [" in decision.table()
