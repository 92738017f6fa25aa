"""Each arm of a running rollout, measured from the prediction log since the rollout started.

    rollout_stats(log, rollout, errors, max_share, revoked) -> RolloutStats(champion: ArmStats, challenger: ArmStats)

Rows of the rollout's window (`created_at >= started_at`) belong to an arm by version: the champion's answers; the
challenger's answers (a canary, source `canary`) or its shadow scores (source `shadow`, never answered). A shadow row
is labelled with the feedback of the champion's answer to the same text of the same request, and the two arms'
agreement is measured on those pairs. Feedback is trusted as a retrain trusts it (healing/label_sources.py): labels
of revoked keys are left out and no key supplies more than `max_share` of an arm's labels.

Accuracy has a Wilson interval, macro-F1 a bootstrap interval (fixed seed, so the same log prints the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from prefix_registry.healing.label_sources import UNKEYED, cap_per_source
from prefix_registry.healing.rollout_judge import ArmStats, wilson_interval
from prefix_registry.registry.rollouts import Rollout, RolloutMode
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.traffic.prediction_records import PROBABILITY_PREFIX, PredictionSource

if TYPE_CHECKING:
    from prefix_registry.registry.store import PrefixRegistry

BOOTSTRAP_SAMPLES = 300
BOOTSTRAP_SEED = 20261207


@dataclass(frozen=True)
class RolloutStats:
    rollout: Rollout
    champion: ArmStats
    challenger: ArmStats
    agreement: float | None  # share of the same texts both arms labelled alike (shadow)
    compared: int  # texts scored by both arms

    def summary(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout.summary(),
            "arms": {"champion": self.champion.summary(), "challenger": self.challenger.summary()},
            "agreement": self.agreement,
            "compared": self.compared,
        }


def rollout_stats(
    log: PredictionLog,
    rollout: Rollout,
    errors: dict[str, int],
    max_share: float,
    revoked: set[str],
) -> RolloutStats:
    """The two arms' statistics (see the module docstring); `errors` maps version -> failed requests."""
    log.flush(timeout=30)
    frame = log.window(rollout.task, since=rollout.started_at)
    trusted = log.trusted_feedback(rollout.task, rollout.started_at, revoked)
    if frame.empty:
        frame = frame.assign(label=pd.Series(dtype=object), label_source=pd.Series(dtype=object))
    else:
        found = [trusted.get(i) for i in frame["prediction_id"]]
        frame = frame.assign(
            label=[f[0] if f else None for f in found], label_source=[(f[1] or UNKEYED) if f else None for f in found]
        )
    shadow = frame["source"] == PredictionSource.SHADOW.value
    champion_rows = frame[(frame["version"] == rollout.champion_version) & ~shadow]
    challenger_source = PredictionSource.SHADOW if rollout.mode is RolloutMode.SHADOW else PredictionSource.CANARY
    challenger_rows = frame[(frame["version"] == rollout.challenger_version) & (frame["source"] == challenger_source)]
    agreement, compared = None, 0
    if rollout.mode is RolloutMode.SHADOW:
        answered = champion_rows[["request_id", "text", "predicted_label", "label", "label_source"]]
        paired = challenger_rows.drop(columns=["label", "label_source"]).merge(
            answered, on=["request_id", "text"], suffixes=("", "_champion")
        )
        compared = len(paired)
        if compared:
            agreement = float((paired["predicted_label"] == paired["predicted_label_champion"]).mean())
        challenger_rows = paired.drop(columns=["predicted_label_champion"])
    labels = sorted(
        str(c).removeprefix(PROBABILITY_PREFIX) for c in frame.columns if str(c).startswith(PROBABILITY_PREFIX)
    )
    return RolloutStats(
        rollout,
        _arm(rollout.champion_version, champion_rows, errors, max_share, labels),
        _arm(rollout.challenger_version, challenger_rows, errors, max_share, labels),
        agreement,
        compared,
    )


def _arm(version: str, rows: pd.DataFrame, errors: dict[str, int], max_share: float, labels: list[str]) -> ArmStats:
    labelled = rows[rows["label"].notna()].sort_values("created_at")
    labelled = cap_per_source(labelled.assign(source=labelled["label_source"]), max_share)
    truth = labelled["label"].astype(str).to_numpy()
    predicted = labelled["predicted_label"].astype(str).to_numpy()
    correct = int((truth == predicted).sum())
    n = len(labelled)
    latency = rows["latency_ms"].dropna().astype(float) if "latency_ms" in rows else pd.Series(dtype=float)
    return ArmStats(
        version=version,
        requests=int(rows["request_id"].nunique()),
        predictions=len(rows),
        errors=int(errors.get(version, 0)),
        labelled=n,
        correct=correct,
        accuracy=correct / n if n else None,
        accuracy_ci=wilson_interval(correct, n) if n else None,
        macro_f1=macro_f1(truth, predicted, labels) if n else None,
        macro_f1_ci=bootstrap_macro_f1(truth, predicted, labels) if n else None,
        mean_confidence=float(rows["confidence"].mean()) if len(rows) else None,
        latency_p50_ms=float(np.percentile(latency, 50)) if len(latency) else None,
        latency_p99_ms=float(np.percentile(latency, 99)) if len(latency) else None,
    )


def macro_f1(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> float:
    """Macro-F1 over `labels` (a label absent from both truth and predictions scores 0, as scikit-learn's)."""
    scores = []
    for label in labels or sorted(set(truth) | set(predicted)):
        tp = int(((truth == label) & (predicted == label)).sum())
        fp = int(((truth != label) & (predicted == label)).sum())
        fn = int(((truth == label) & (predicted != label)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def bootstrap_macro_f1(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> tuple[float, float]:
    """A 95 % percentile bootstrap interval of macro-F1 (fixed seed: the same rows give the same interval)."""
    generator = np.random.default_rng(BOOTSTRAP_SEED)
    n = len(truth)
    draws = [macro_f1(truth[i], predicted[i], labels) for i in generator.integers(0, n, (BOOTSTRAP_SAMPLES, n))]
    low, high = np.percentile(draws, [2.5, 97.5])
    return (float(low), float(high))


def stats_for(registry: PrefixRegistry, log: PredictionLog, rollout: Rollout) -> RolloutStats:
    """`rollout_stats` with the errors from the rollout store and the label trust of the settings."""
    from prefix_registry.traffic.api_keys import ApiKeyStore

    keys = ApiKeyStore.from_settings(registry.settings)
    try:
        revoked = keys.revoked_names()
    finally:
        keys.close()
    errors = registry.rollouts.store.errors(rollout.task, rollout.started_at)
    return rollout_stats(log, rollout, errors, registry.settings.max_label_share, revoked)
