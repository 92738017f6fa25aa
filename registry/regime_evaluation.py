"""Evaluating a task with regimes as it is served: each row routed by the router's champion (below its threshold:
the fallback regime), read by that regime's champion, scored overall and per regime; with each row's true regime,
the router's accuracy too.

    report = evaluate_routed(registry, "reviews", frame, regime_column="regime")
    report.summary()     # {"metrics": ..., "per_regime": {...}, "router_accuracy": 0.96, ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefix_registry.errors import AliasNotSet, DataError, InvalidRegime
from prefix_registry.inference.embedding import router_inputs
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.registry.loading import load_version
from prefix_registry.registry.regimes import regime_model_name, regimes_of
from prefix_registry.registry.routers import router_champion, router_model_name

if TYPE_CHECKING:
    import pandas as pd

    from prefix_registry.registry.store import PrefixRegistry


@dataclass(frozen=True)
class RoutedEvaluation:
    task: str
    router_version: str
    versions: dict[str, str]  # regime -> its champion's version
    metrics: dict[str, Any]
    per_regime: dict[str, dict[str, Any]]  # regime -> metrics of the rows routed to it
    routed_counts: dict[str, int]
    router_accuracy: float | None
    fallbacks: int
    decision_metric: str  # the regimes' kind's (what `metrics` and each `per_regime` are judged by)

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "router_version": self.router_version,
            "versions": self.versions,
            "metrics": self.metrics,
            "per_regime": self.per_regime,
            "routed_counts": self.routed_counts,
            "router_accuracy": self.router_accuracy,
            "fallbacks": self.fallbacks,
        }


def evaluate_routed(
    registry: PrefixRegistry, task: str, frame: pd.DataFrame, regime_column: str | None = None
) -> RoutedEvaluation:
    """Route every row of `frame` (text, label[, regime_column]) as serving does and score the answers."""
    regimes = regimes_of(registry, task)
    found = router_champion(registry, task)
    if found is None:
        raise AliasNotSet(f"task {task!r} has no router champion; train one (prefixctl router train {task} ...)")
    router_version, router = found
    pool = PrefixPool(registry.settings.resolved_cache_dir)
    champions = {}
    for regime in regimes:
        model = regime_model_name(task, regime)
        champions[regime] = load_version(registry, registry.resolve(model), pool)
    labels = champions[router.fallback].labels
    kind = champions[router.fallback].version.kind
    texts, truth = frame["text"].tolist(), frame["label"].tolist()
    unknown = sorted(set(truth) - set(labels))
    if unknown:
        raise DataError(f"labels {unknown} are not labels of {task}'s regimes: {labels}")
    base = champions[router.fallback].attached.base
    inputs = router_inputs(router.features, base, texts, router.max_length, router_model_name(task))
    choices = router.choose(router.probabilities(inputs))
    predicted: list[str] = [""] * len(texts)
    per_regime: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for regime, loaded in champions.items():
        rows = [i for i, choice in enumerate(choices) if choice.regime == regime]
        counts[regime] = len(rows)
        if not rows:
            continue
        answers = loaded.predict([texts[i] for i in rows]).predicted
        for i, answer in zip(rows, answers, strict=True):
            predicted[i] = answer
        per_regime[regime] = kind.metrics([truth[i] for i in rows], answers, labels)
    router_accuracy = None
    if regime_column is not None:
        if regime_column not in frame.columns:
            raise DataError(f"expected a column {regime_column!r}, got columns {list(frame.columns)}")
        true_regimes = frame[regime_column].astype(str).tolist()
        strange = sorted(set(true_regimes) - set(regimes))
        if strange:
            raise InvalidRegime(f"regimes {strange} in {regime_column!r} are not regimes of {task!r}: {regimes}")
        right = sum(c.regime == r for c, r in zip(choices, true_regimes, strict=True))
        router_accuracy = right / len(texts) if texts else None
    return RoutedEvaluation(
        task=task,
        router_version=router_version,
        versions={regime: loaded.version.version for regime, loaded in champions.items()},
        metrics=kind.metrics(truth, predicted, labels),
        per_regime=per_regime,
        routed_counts=counts,
        router_accuracy=router_accuracy,
        fallbacks=sum(c.fell_back for c in choices),
        decision_metric=kind.decision_metric,
    )
