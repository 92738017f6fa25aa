"""The rollout judge: from the two arms' live statistics, promote the challenger, roll it back, or wait.

    judge(champion: ArmStats, challenger: ArmStats, policy) -> Decision(verdict, reason)   (pure: no I/O)

In order:
1. Guardrails (as soon as each arm has `min_requests` requests): the challenger's error rate may exceed the
   champion's by at most `max_error_rate_increase`, and its p99 latency may be at most `max_p99_ratio` times the
   champion's (plus `p99_slack_ms`, so that two fast arms are not judged on noise). A breach: ROLLBACK.
2. Quality, once each arm has `min_labels` labelled predictions: the difference in live accuracy (challenger minus
   champion) with a normal confidence bound at `z`. The judge looks again after every batch of labels, so `z`
   defaults to 2.58 (99 %) rather than 1.96: repeated looks at a 95 % bound would declare a winner by chance far
   more often than 5 % of the time. Upper bound below 0: ROLLBACK (the challenger is worse). Lower bound above
   `-max_loss`: PROMOTE (the challenger is no worse than the champion, within `max_loss`). Otherwise CONTINUE,
   until `max_labels` labels per arm: then ROLLBACK (not shown as good in the labels allowed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefix_registry.config_values import field_default, field_help


class Verdict(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    CONTINUE = "continue"


@dataclass(frozen=True)
class ArmStats:
    """What one arm did since the rollout started. Rates are fractions; None where there is nothing to measure."""

    version: str
    requests: int
    predictions: int
    errors: int
    labelled: int
    correct: int
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    macro_f1: float | None = None
    macro_f1_ci: tuple[float, float] | None = None
    mean_confidence: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None

    @property
    def error_rate(self) -> float:
        attempts = self.requests + self.errors
        return self.errors / attempts if attempts else 0.0

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate}


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    difference: float | None = None  # challenger minus champion accuracy
    bound: tuple[float, float] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "decision": self.verdict.value,
            "reason": self.reason,
            "difference": self.difference,
            "bound": list(self.bound) if self.bound else None,
        }


class JudgePolicy(BaseModel):
    """The judge's settings; unknown keys and out-of-range values are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_labels: int = Field(default=100, ge=1, description="Labelled predictions each arm needs before any verdict.")
    max_labels: int = Field(
        default=2000, ge=1, description="Labels per arm after which an undecided challenger is rolled back."
    )
    z: float = Field(
        default=2.576, gt=0, description="Width of the bound on the accuracy difference (2.576: 99 %, for many looks)."
    )
    max_loss: float = Field(
        default=0.02, ge=0, lt=1, description="Accuracy the challenger may lose and still be promoted."
    )
    min_requests: int = Field(default=50, ge=1, description="Requests each arm needs before the guardrails apply.")
    max_error_rate_increase: float = Field(
        default=0.02, ge=0, le=1, description="Error rate the challenger may add over the champion's."
    )
    max_p99_ratio: float = Field(default=1.5, ge=1, description="Challenger p99 latency / champion p99 allowed.")
    p99_slack_ms: float = Field(default=50.0, ge=0, description="Latency difference (ms) never judged a breach.")

    @model_validator(mode="after")
    def _labels_in_order(self) -> JudgePolicy:
        if self.max_labels < self.min_labels:
            raise ValueError(f"max_labels must be at least min_labels ({self.min_labels}), got {self.max_labels}")
        return self


def judge_default(name: str) -> Any:
    return field_default(JudgePolicy, name)


def judge_help(name: str) -> str:
    return field_help(JudgePolicy, name)


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion correct/n (0..1); (0, 1) when n is 0."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def judge(champion: ArmStats, challenger: ArmStats, policy: JudgePolicy | None = None) -> Decision:
    """The verdict on a rollout from its arms' statistics (see the module docstring)."""
    policy = policy or JudgePolicy()
    guard = _guardrail_breach(champion, challenger, policy)
    if guard is not None:
        return Decision(Verdict.ROLLBACK, guard)
    fewest = min(champion.labelled, challenger.labelled)
    if fewest < policy.min_labels:
        return Decision(
            Verdict.CONTINUE,
            f"too few labels: champion {champion.labelled}, challenger {challenger.labelled}; "
            f"expected at least {policy.min_labels} per arm",
        )
    p1, n1 = champion.correct / champion.labelled, champion.labelled
    p2, n2 = challenger.correct / challenger.labelled, challenger.labelled
    difference = p2 - p1
    # Floor each variance at one success or failure's worth: an arm at 0 % or 100 % is not known exactly.
    variance = max(p1 * (1 - p1), 1 / n1) / n1 + max(p2 * (1 - p2), 1 / n2) / n2
    half = policy.z * math.sqrt(variance)
    bound = (difference - half, difference + half)
    shown = (
        f"accuracy v{challenger.version} {p2:.3f} ({n2} labels) vs v{champion.version} {p1:.3f} ({n1}): "
        f"difference {difference:+.3f}, bound [{bound[0]:+.3f}, {bound[1]:+.3f}] at z={policy.z:g}"
    )
    if bound[1] < 0:
        return Decision(Verdict.ROLLBACK, f"challenger worse: {shown}", difference, bound)
    if bound[0] > -policy.max_loss:
        return Decision(Verdict.PROMOTE, f"challenger no worse than -{policy.max_loss:g}: {shown}", difference, bound)
    if fewest >= policy.max_labels:
        return Decision(
            Verdict.ROLLBACK, f"not shown as good within {policy.max_labels} labels per arm: {shown}", difference, bound
        )
    return Decision(Verdict.CONTINUE, f"undecided: {shown}", difference, bound)


def _guardrail_breach(champion: ArmStats, challenger: ArmStats, policy: JudgePolicy) -> str | None:
    if min(champion.requests + champion.errors, challenger.requests + challenger.errors) < policy.min_requests:
        return None
    allowed = champion.error_rate + policy.max_error_rate_increase
    if challenger.error_rate > allowed:
        return (
            f"error-rate guardrail: challenger v{challenger.version} {challenger.error_rate:.3f} "
            f"> champion {champion.error_rate:.3f} + {policy.max_error_rate_increase:g}"
        )
    if champion.latency_p99_ms is not None and challenger.latency_p99_ms is not None:
        limit = max(champion.latency_p99_ms * policy.max_p99_ratio, champion.latency_p99_ms + policy.p99_slack_ms)
        if challenger.latency_p99_ms > limit:
            return (
                f"latency guardrail: challenger v{challenger.version} p99 {challenger.latency_p99_ms:.0f} ms "
                f"> {limit:.0f} ms (champion {champion.latency_p99_ms:.0f} ms x {policy.max_p99_ratio:g})"
            )
    return None
