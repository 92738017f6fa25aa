"""The regime mix of a task with regimes: how its traffic splits between regimes, now against before.

More long reviews this week than last is a change of the mix, not drift within a regime: each regime's predictions
are logged under its own model (`TASK.REGIME`) and judged for drift against its own reference window
(monitoring/drift.py), while the shares of the regimes are judged here, and reported as a mix shift, never as drift.

    verdict = judge_regime_mix("reviews", {"rt": 40, "imdb": 40}, {"rt": 10, "imdb": 70})
    verdict.status          # MixStatus.SHIFTED: total variation 0.38 > 0.20, chi-square p < 0.01
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from prefix_registry.registry.regimes import regime_model_name
from prefix_registry.traffic.prediction_store import PredictionStore

DEFAULT_MAX_DISTANCE = 0.2  # total variation between the two mixes above which the mix has shifted
DEFAULT_ALPHA = 0.01  # and the chi-square test of the two windows' counts must be this sure
DEFAULT_MIN_ROWS = 30  # per window; fewer: too few to judge


class MixStatus(StrEnum):
    STABLE = "stable"
    SHIFTED = "mix_shift"  # the regimes' shares moved; no statement about drift within any regime
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True)
class RegimeMixVerdict:
    """The regimes' shares of traffic in a reference and a current window, and whether the mix shifted."""

    task: str
    status: MixStatus
    reference_counts: dict[str, int]
    current_counts: dict[str, int]
    distance: float  # total variation distance between the two shares (0: same mix, 1: disjoint)
    p_value: float | None  # chi-square test of the two windows' counts (None: not computed)
    max_distance: float

    @property
    def reference_shares(self) -> dict[str, float]:
        return _shares(self.reference_counts)

    @property
    def current_shares(self) -> dict[str, float]:
        return _shares(self.current_counts)

    def describe(self) -> str:
        moves = ", ".join(
            f"{regime} {self.reference_shares[regime]:.0%} -> {self.current_shares[regime]:.0%}"
            for regime in sorted(self.reference_counts)
        )
        if self.status is MixStatus.INSUFFICIENT_DATA:
            return f"{self.task}: too few predictions to judge the regime mix ({moves})"
        verb = "shifted" if self.status is MixStatus.SHIFTED else "stable"
        return (
            f"{self.task}: regime mix {verb} ({moves}; total variation {self.distance:.2f}, limit "
            f"{self.max_distance:.2f}); a mix shift is not drift within a regime"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "status": self.status.value,
            "reference_counts": self.reference_counts,
            "current_counts": self.current_counts,
            "reference_shares": self.reference_shares,
            "current_shares": self.current_shares,
            "total_variation": self.distance,
            "p_value": self.p_value,
            "max_distance": self.max_distance,
            "summary": self.describe(),
        }


def judge_regime_mix(
    task: str,
    reference_counts: dict[str, int],
    current_counts: dict[str, int],
    max_distance: float = DEFAULT_MAX_DISTANCE,
    alpha: float = DEFAULT_ALPHA,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> RegimeMixVerdict:
    """SHIFTED when the shares moved by more than `max_distance` (total variation) and a chi-square test of the
    counts is below `alpha`; INSUFFICIENT_DATA when either window has fewer than `min_rows` predictions."""
    from scipy.stats import chi2_contingency

    if sorted(reference_counts) != sorted(current_counts):
        raise ValueError(
            f"both windows must count the same regimes: expected {sorted(reference_counts)}, "
            f"got {sorted(current_counts)}"
        )
    regimes = sorted(reference_counts)
    reference, current = _shares(reference_counts), _shares(current_counts)
    distance = 0.5 * sum(abs(reference[r] - current[r]) for r in regimes)
    if sum(reference_counts.values()) < min_rows or sum(current_counts.values()) < min_rows:
        status = MixStatus.INSUFFICIENT_DATA
        return RegimeMixVerdict(task, status, reference_counts, current_counts, distance, None, max_distance)
    seen = [r for r in regimes if reference_counts[r] + current_counts[r] > 0]
    p_value = (
        float(chi2_contingency([[reference_counts[r] for r in seen], [current_counts[r] for r in seen]]).pvalue)
        if len(seen) > 1
        else 1.0
    )
    shifted = distance > max_distance and p_value < alpha
    return RegimeMixVerdict(
        task,
        MixStatus.SHIFTED if shifted else MixStatus.STABLE,
        reference_counts,
        current_counts,
        distance,
        p_value,
        max_distance,
    )


def regime_counts(
    store: PredictionStore, task: str, regimes: list[str], since: datetime, until: datetime
) -> dict[str, int]:
    """How many predictions each regime's model answered in [since, until)."""
    return {regime: len(store.window(regime_model_name(task, regime), since=since, until=until)) for regime in regimes}


def _shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {regime: (count / total if total else 0.0) for regime, count in counts.items()}
