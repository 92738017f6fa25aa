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


def test_arm_statistics_cap_each_keys_labels_and_leave_revoked_keys_out(tmp_path) -> None:
    from datetime import UTC, datetime, timedelta

    from prefix_registry.healing.rollout_stats import rollout_stats
    from prefix_registry.registry.rollouts import Rollout, RolloutMode
    from prefix_registry.traffic.prediction_log import PredictionLog
    from prefix_registry.traffic.prediction_records import PredictionRecord

    started = datetime.now(UTC) - timedelta(minutes=5)
    rollout = Rollout("reviews", RolloutMode.CANARY, 30.0, "2", "1", started, "tester")
    probabilities = {"negative": 0.2, "positive": 0.8}
    log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    try:
        before = PredictionRecord.new(
            "reviews", "1", "before", "positive", probabilities, created_at=started - timedelta(1)
        )
        champion = [
            PredictionRecord.new("reviews", "1", f"text {i}", "positive", probabilities, f"r{i}", latency_ms=float(i))
            for i in range(100)
        ]
        challenger = [
            PredictionRecord.new("reviews", "2", f"other {i}", "negative", probabilities, f"c{i}", source="canary")
            for i in range(10)
        ]
        log.write([before, *champion, *challenger])
        log.attach_feedback(before.prediction_id, "positive")  # before the rollout: not counted
        for i, record in enumerate(champion):
            # alice: 30 right answers; mallory: 70 labels that call every answer wrong.
            log.attach_feedback(record.prediction_id, *(("positive", "alice") if i < 30 else ("negative", "mallory")))
        for record in challenger:
            log.attach_feedback(record.prediction_id, "negative")  # unkeyed: trusted, never capped

        stats = rollout_stats(log, rollout, {"2": 3}, max_share=0.5, revoked=set())
        # mallory is capped at alice's 30 (each key at most half of the arm's labels).
        assert (stats.champion.labelled, stats.champion.correct, stats.champion.requests) == (60, 30, 100)
        assert (stats.challenger.labelled, stats.challenger.correct, stats.challenger.errors) == (10, 10, 3)
        assert stats.challenger.error_rate == pytest.approx(3 / 13)
        assert stats.champion.latency_p50_ms == pytest.approx(49.5)
        assert stats.champion.accuracy_ci == wilson_interval(30, 60)
        revoked = rollout_stats(log, rollout, {}, max_share=0.5, revoked={"mallory"})
        assert (revoked.champion.labelled, revoked.champion.correct) == (0, 0)  # alice alone may not be all of it
        assert stats.agreement is None
    finally:
        log.close()
