"""Ensembles of a task's versions: its top K versions by their own test score, averaged in one mixed forward pass
(inference/ensemble.py), and scored against the best of them alone.

    report = evaluate_ensemble(registry, "sentiment", frame, k=3)     # EnsembleReport: ensemble vs best single
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefix_registry.errors import ConfigError, DataError
from prefix_registry.inference.ensemble import ensemble_probabilities
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.registry.loading import load_version
from prefix_registry.registry.versions import PrefixVersion

if TYPE_CHECKING:
    import pandas as pd

    from prefix_registry.registry.store import PrefixRegistry


def top_versions(registry: PrefixRegistry, task: str, k: int) -> list[PrefixVersion]:
    """The task's `k` classification versions with the best own-test decision score (ties: the newer first)."""
    if k < 1:
        raise ConfigError(f"an ensemble needs at least 1 version, got --ensemble {k}")
    scored = [
        v for v in registry.versions(task) if not v.kind.generates and v.metrics.get(v.kind.version_metric) is not None
    ]
    if len(scored) < k:
        raise ConfigError(
            f"task {task!r} has {len(scored)} scored classification version(s); expected at least {k} for --ensemble"
        )
    scored.sort(key=lambda v: (v.metrics[v.kind.version_metric], int(v.version)), reverse=True)
    return scored[:k]


@dataclass(frozen=True)
class EnsembleReport:
    task: str
    versions: list[str]
    metrics: dict[str, Any]
    members: dict[str, dict[str, Any]]  # version -> its metrics alone
    decision_metric: str

    @property
    def best_single(self) -> str:
        return max(self.members, key=lambda v: self.members[v][self.decision_metric])

    def summary(self) -> dict[str, Any]:
        best = self.best_single
        return {
            "task": self.task,
            "ensemble": {"versions": self.versions, "metrics": self.metrics},
            "members": [{"version": v, "metrics": m} for v, m in self.members.items()],
            "best_single": {"version": best, self.decision_metric: self.members[best][self.decision_metric]},
            "ensemble_minus_best": self.metrics[self.decision_metric] - self.members[best][self.decision_metric],
        }


def evaluate_ensemble(registry: PrefixRegistry, task: str, frame: pd.DataFrame, k: int) -> EnsembleReport:
    """Score the mean of the top `k` versions' probabilities on `frame` (text, label), and each member alone."""
    versions = top_versions(registry, task, k)
    pool = PrefixPool(registry.settings.resolved_cache_dir)
    loaded = [load_version(registry, v, pool) for v in versions]
    kind = versions[0].kind
    labels = loaded[0].labels
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise DataError(f"labels {unknown} are not labels of {task}: {labels}")
    texts, truth = frame["text"].tolist(), frame["label"].tolist()
    ensemble = ensemble_probabilities([member.attached for member in loaded], texts)
    members = {
        member.version.version: kind.metrics(truth, member.predict(texts).predicted, labels) for member in loaded
    }
    return EnsembleReport(
        task=task,
        versions=[v.version for v in versions],
        metrics=kind.metrics(truth, ensemble.predicted, labels),
        members=members,
        decision_metric=kind.decision_metric,
    )
