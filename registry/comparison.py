"""Two versions of a task side by side: scores per named evaluation set, lineage, and the retrain decision.

    compare_versions(registry, "sentiment", "champion", "2") -> VersionComparison
        .rows      one `SetScore` per (evaluation set, metric): each version's score and whether the set is the same
        .summary() JSON-ready, as `prefixctl compare --json` prints it

A version's score on a set is the metric of its own run named by the set's dataset (`eval/<dataset>/<metric>`, for
each metric its kind names, see eval_sets.py): on a shared role (reference test, fresh hold-out) the other version's
set when this version's run was scored on it too (a champion judged by a retrain), else its own. So the values
printed are exactly the MLflow metrics of each version's run. Versions registered before `eval/` names: the role-named
version tags (`reference_test_<metric>`), or the `champion_<set>_...` score a retrain recorded on the other version.
Two scores are comparable only when they were computed on the same dataset (eval_sets.py names each one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefix_registry.errors import RegistryError, RegistryUnavailable, VersionNotFound
from prefix_registry.registry.eval_sets import (
    EVAL_SET_TAG_PREFIX,
    EVAL_SETS,
    FRESH_HOLDOUT,
    LEGACY_CHAMPION_PREFIX,
    OWN_TEST,
    REFERENCE_TEST,
    eval_metric_name,
)
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.versions import (
    TAG_DATA_WINDOW,
    TAG_RETRAIN_DECISION,
    TAG_ROLLED_BACK,
    TAG_TRIGGER_REASON,
    PrefixVersion,
    hidden_tag,
)

TAG_COMPARED_WITH = hidden_tag("compared_with_version")
TAG_DECISION_REASON = hidden_tag("decision_reason")
# Compare rows in reading order: the shared sets first, each version's own split last.
SET_ORDER = (REFERENCE_TEST, FRESH_HOLDOUT, OWN_TEST)


@dataclass(frozen=True)
class SetScore:
    """Both versions' score of one metric on one evaluation set; `same_set` when both were scored on one dataset."""

    set: str
    metric: str
    dataset_a: str | None
    dataset_b: str | None
    a: float | None
    b: float | None

    @property
    def same_set(self) -> bool:
        return self.dataset_a is not None and self.dataset_a == self.dataset_b

    @property
    def change(self) -> float | None:
        """b - a, only when both scores exist and were computed on the same set."""
        return self.b - self.a if self.same_set and self.a is not None and self.b is not None else None

    def summary(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "metric": self.metric,
            "dataset_a": self.dataset_a,
            "dataset_b": self.dataset_b,
            "a": self.a,
            "b": self.b,
            "same_set": self.same_set,
            "change": self.change,
        }


@dataclass(frozen=True)
class VersionComparison:
    """Versions `a` and `b` of one task, compared."""

    task: str
    a: PrefixVersion
    b: PrefixVersion
    rows: list[SetScore]
    decision: dict[str, Any] | None = None
    lineage: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "a": self.a.version,
            "b": self.b.version,
            "lineage": self.lineage,
            "scores": [row.summary() for row in self.rows],
            "decision": self.decision,
        }


def resolve_ref(registry: PrefixRegistry, task: str, ref: str) -> PrefixVersion:
    """The version a command-line reference names: a number (`2`, `v2`) or an alias (`champion`)."""
    number = ref.removeprefix("v")
    if number.isascii() and number.isdigit():
        return registry.version(task, number)
    aliases = registry.aliases(task)
    if ref not in aliases:
        known = ", ".join(f"{alias}=v{version}" for alias, version in sorted(aliases.items())) or "none"
        existing = ", ".join(v.version for v in registry.versions(task)) or "none"
        raise VersionNotFound(
            f"task {task!r} has no version or alias {ref!r}: expected a version number ({existing}) "
            f"or an alias ({known})"
        )
    return registry.version(task, aliases[ref])


def compare_versions(registry: PrefixRegistry, task: str, a_ref: str, b_ref: str) -> VersionComparison:
    """Compare two versions (numbers or aliases) of `task` on every evaluation set either was scored on."""
    a, b = resolve_ref(registry, task, a_ref), resolve_ref(registry, task, b_ref)
    scored_a, scored_b = _Scored(a, run_metrics(registry, a)), _Scored(b, run_metrics(registry, b))
    rows = []
    for role in SET_ORDER:
        for metric in a.kind.metric_names:
            dataset_a, score_a = _score(scored_a, scored_b, role, metric)
            dataset_b, score_b = _score(scored_b, scored_a, role, metric)
            if score_a is None and score_b is None:
                continue
            rows.append(SetScore(role, metric, dataset_a, dataset_b, score_a, score_b))
    return VersionComparison(task, a, b, rows, _decision(a, b), {v.version: lineage(v) for v in (a, b)})


def lineage(version: PrefixVersion) -> dict[str, Any]:
    """Where a version came from and what became of it, in a few scalars."""
    tags = version.tags
    return {
        "parent": version.parent_version,
        "trigger": version.trigger,
        "trigger_reason": tags.get(TAG_TRIGGER_REASON),
        "method": version.method,
        "base": version.base,
        "data_window": tags.get(TAG_DATA_WINDOW),
        "aliases": version.aliases,
        "decision": tags.get(TAG_RETRAIN_DECISION),
        "rolled_back": tags.get(TAG_ROLLED_BACK),
        "created_at": version.created_at.isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class _Scored:
    """A version and the metrics of its run."""

    version: PrefixVersion
    metrics: dict[str, float]


def run_metrics(registry: PrefixRegistry, version: PrefixVersion) -> dict[str, float]:
    """The latest value of every metric of the version's run (empty when its run is gone or it has none)."""
    if not version.run_id:
        return {}
    try:
        return dict(registry.run(version.run_id).data.metrics)
    except RegistryUnavailable:
        raise
    except RegistryError:
        return {}


def _set_name(version: PrefixVersion, role: str) -> str | None:
    return version.tags.get(f"{EVAL_SET_TAG_PREFIX}{role}")


def _score(scored: _Scored, other: _Scored, role: str, metric: str) -> tuple[str | None, float | None]:
    """(dataset, score) of a version on `role`: its run's score on the other version's set for the role when it
    has one (a champion judged on a challenger's sets), else on its own; else the legacy names."""
    version = scored.version
    names = [_set_name(version, role)]
    if role != OWN_TEST:
        names.insert(0, _set_name(other.version, role))
    for name in names:
        value = scored.metrics.get(eval_metric_name(name, metric)) if name else None
        if value is not None:
            return name, value
    return _legacy_score(version, other.version, role, metric)


def _legacy_score(
    version: PrefixVersion, other: PrefixVersion, role: str, metric: str
) -> tuple[str | None, float | None]:
    """(dataset, score) of a version registered before `eval/` names: its role-named tag metric, else what a
    retrain judging it against `other` recorded on `other` as `champion_<role>_<metric>`."""
    own = version.metrics.get(f"{role}_{metric}")
    dataset = _set_name(version, role)
    if own is None and role == REFERENCE_TEST and version.parent_version is None:
        # A first version registered before reference sets were named: its own split is the reference set.
        own = version.metrics.get(f"{OWN_TEST}_{metric}")
        dataset = dataset or _set_name(version, OWN_TEST)
    if own is not None:
        return dataset or _legacy_dataset(version, role), own
    if role != OWN_TEST and other.tags.get(TAG_COMPARED_WITH) == version.version:
        judged = other.metrics.get(f"{LEGACY_CHAMPION_PREFIX}{role}_{metric}")
        if judged is not None:
            return _set_name(other, role) or _legacy_dataset(other, role), judged
    return None, None


def _legacy_dataset(version: PrefixVersion, role: str) -> str | None:
    """The dataset name a version stored before eval_sets.py would have had (for older registries)."""
    if role == OWN_TEST or (role == REFERENCE_TEST and version.parent_version is None):
        return f"{version.task}-v{version.version}-test"
    if role == REFERENCE_TEST:
        return f"{version.task}-v{version.parent_version}-test"
    return f"{version.task}-v{version.version}-fresh-holdout" if role in EVAL_SETS else None


def _decision(a: PrefixVersion, b: PrefixVersion) -> dict[str, Any] | None:
    """The retrain decision that judged one of the two against the other, if there was one."""
    for challenger, champion in ((b, a), (a, b)):
        if challenger.tags.get(TAG_COMPARED_WITH) == champion.version:
            return {
                "champion": champion.version,
                "challenger": challenger.version,
                "decision": challenger.tags.get(TAG_RETRAIN_DECISION),
                "reason": challenger.tags.get(TAG_DECISION_REASON),
                "rolled_back": challenger.tags.get(TAG_ROLLED_BACK),
            }
    return None
