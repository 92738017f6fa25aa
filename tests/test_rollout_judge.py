"""Specification of the rollout judge (a pure function of the arms' statistics) and of canary assignment."""

from __future__ import annotations

import pytest

from prefix_registry.config_values import from_values
from prefix_registry.errors import ConfigError
from prefix_registry.healing.rollout_judge import ArmStats, JudgePolicy, Verdict, judge, wilson_interval
from prefix_registry.serving.routing import in_shadow_sample, takes_challenger


def arm(version: str, labelled: int, correct: int, requests: int = 500, errors: int = 0, p99: float = 40.0) -> ArmStats:
    return ArmStats(
        version=version,
        requests=requests,
        predictions=requests,
        errors=errors,
        labelled=labelled,
        correct=correct,
        latency_p50_ms=p99 / 2,
        latency_p99_ms=p99,
    )


def test_a_clearly_worse_challenger_is_rolled_back() -> None:
    decision = judge(arm("1", 200, 160), arm("2", 200, 90))  # 80 % vs 45 %
    assert decision.verdict is Verdict.ROLLBACK
    assert decision.difference == pytest.approx(-0.35)
    assert decision.bound is not None and decision.bound[1] < 0
    assert decision.reason.startswith("challenger worse: accuracy v2 0.450 (200 labels) vs v1 0.800 (200)")


def test_a_challenger_as_good_or_better_is_promoted() -> None:
    decision = judge(arm("1", 400, 300), arm("2", 400, 340))  # 75 % vs 85 %
    assert decision.verdict is Verdict.PROMOTE
    assert decision.bound is not None and decision.bound[0] > -0.02


def test_too_few_labels_on_either_arm_means_continue_whatever_the_accuracy() -> None:
    decision = judge(arm("1", 400, 380), arm("2", 99, 0))
    assert decision.verdict is Verdict.CONTINUE
    assert decision.reason == "too few labels: champion 400, challenger 99; expected at least 100 per arm"


def test_an_undecided_challenger_continues_until_the_label_budget_then_is_rolled_back() -> None:
    close = judge(arm("1", 300, 240), arm("2", 300, 234))  # 80 % vs 78 %: the bound straddles both limits
    assert close.verdict is Verdict.CONTINUE
    policy = JudgePolicy(max_labels=300)
    assert judge(arm("1", 300, 240), arm("2", 300, 234), policy).verdict is Verdict.ROLLBACK


def test_guardrails_roll_back_on_errors_or_latency_before_any_label() -> None:
    errors = judge(arm("1", 0, 0, errors=1), arm("2", 0, 0, errors=40))
    assert errors.verdict is Verdict.ROLLBACK and errors.reason.startswith("error-rate guardrail")
    slow = judge(arm("1", 0, 0, p99=100.0), arm("2", 0, 0, p99=400.0))
    assert slow.verdict is Verdict.ROLLBACK and slow.reason.startswith("latency guardrail: challenger v2 p99 400 ms")
    # Within 50 ms of a fast champion: noise, not a breach.
    assert judge(arm("1", 0, 0, p99=10.0), arm("2", 0, 0, p99=45.0)).verdict is Verdict.CONTINUE


def test_guardrails_wait_for_enough_requests() -> None:
    assert judge(arm("1", 0, 0, requests=10), arm("2", 0, 0, requests=10, errors=9)).verdict is Verdict.CONTINUE


def test_judge_settings_are_validated_with_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="max_labels must be at least min_labels"):
        from_values(JudgePolicy, {"min_labels": 500, "max_labels": 100}, "rollout judge")
    with pytest.raises(ConfigError, match="unknown rollout judge key"):
        from_values(JudgePolicy, {"minimum": 5}, "rollout judge")


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(80, 100)
    assert (round(low, 4), round(high, 4)) == (0.7112, 0.8666)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_a_30_percent_canary_takes_30_percent_of_600_routing_keys_and_keys_are_sticky() -> None:
    keys = [f"user-{i}" for i in range(600)]
    taken = [takes_challenger("sentiment", "7", key, 30.0) for key in keys]
    assert 0.25 * 600 <= sum(taken) <= 0.35 * 600
    assert taken == [takes_challenger("sentiment", "7", key, 30.0) for key in keys]  # the same key, the same arm
    assert not any(takes_challenger("sentiment", "7", key, 0.0) for key in keys)
    assert all(takes_challenger("sentiment", "7", key, 100.0) for key in keys)
    # A known value: sha256 is the same in every process (Python's hash() is not).
    assert [takes_challenger("sentiment", "7", f"user-{i}", 30.0) for i in range(8)] == FIRST_EIGHT


def test_a_shadow_sample_scores_its_share_of_requests() -> None:
    sampled = sum(in_shadow_sample("sentiment", "7", f"request-{i}", 20.0) for i in range(1000))
    assert 150 <= sampled <= 250
    assert all(in_shadow_sample("sentiment", "7", f"request-{i}", 100.0) for i in range(50))


FIRST_EIGHT = [False, False, False, False, False, False, True, False]
