"""Two versions of a task side by side: scores per named evaluation set, lineage, and the retrain decision.

    compare_versions(registry, "sentiment", "champion", "2") -> VersionComparison
        .rows      one `SetScore` per (evaluation set, metric): each version's score and whether the set is the same
        .summary() JSON-ready, as `prefixctl compare --json` prints it

A version's score on a set is its own metric (`reference_test_<metric>`, for each metric its kind names); when it has
none but the other version was judged against it in a retrain, it is the `champion_<set>_...` score that retrain
recorded on the other version.
Two scores are comparable only when they were computed on the same dataset (eval_sets.py names each one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefix_registry.errors import VersionNotFound
from prefix_registry.registry.eval_sets import (
    CHAMPION_PREFIX,
    EVAL_SET_TAG_PREFIX,
    EVAL_SETS,
    OWN_TEST,
    REFERENCE_TEST,
)
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.versions import (
    TAG_DATA_WINDOW,
    TAG_RETRAIN_DECISION,
    TAG_ROLLED_BACK,
    TAG_TRIGGER_REASON,
    PrefixVersion,
)

TAG_COMPARED_WITH = "compared_with_version"
TAG_DECISION_REASON = "decision_reason"
# Compare rows in reading order: the shared sets first, each version's own split last.
SET_ORDER = (REFERENCE_TEST, "fresh_holdout", OWN_TEST)


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
    rows = []
    for role in SET_ORDER:
        for metric in a.kind.metric_names:
            dataset_a, score_a = _score(a, b, role, metric)
            dataset_b, score_b = _score(b, a, role, metric)
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


def _score(version: PrefixVersion, other: PrefixVersion, role: str, metric: str) -> tuple[str | None, float | None]:
    """(dataset, score) of `version` on `role`: its own metric, else what a retrain judging it against `other`
    recorded on `other`."""
    own = version.metrics.get(f"{role}_{metric}")
    dataset = version.tags.get(f"{EVAL_SET_TAG_PREFIX}{role}")
    if own is None and role == REFERENCE_TEST and version.parent_version is None:
        # A first version registered before reference sets were named: its own split is the reference set.
        own = version.metrics.get(f"{OWN_TEST}_{metric}")
        dataset = dataset or version.tags.get(f"{EVAL_SET_TAG_PREFIX}{OWN_TEST}")
    if own is not None:
        return dataset or _legacy_dataset(version, role), own
    if role != OWN_TEST and other.tags.get(TAG_COMPARED_WITH) == version.version:
        judged = other.metrics.get(f"{CHAMPION_PREFIX}{role}_{metric}")
        if judged is not None:
            return other.tags.get(f"{EVAL_SET_TAG_PREFIX}{role}") or _legacy_dataset(other, role), judged
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
