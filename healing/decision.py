"""What a retrain decided, as a value: why it ran, what it found, and what should happen to the challenger.

    retrain(...)             -> RetrainDecision (outcome PROMOTED, ROLLOUT_STARTED or KEPT_CHAMPION; nothing moved yet)
                             or RetrainSkipped (a SkipReason: no challenger was trained)
    orchestrator.act(...)    carries the decision out (the only code that moves the champion after a retrain)

The states are enums whose values are the words already stored in MLflow tags and Prefect tags and printed by
`prefixctl`, so nothing a user reads changes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from prefix_registry.errors import ConfigError, PrefixRegistryError
from prefix_registry.registry.versions import RetrainOutcome

if TYPE_CHECKING:  # light to import (the CLI's deployments read RetrainTrigger): no MLflow, pandas or Evidently
    from prefix_registry.monitoring.drift_runs import DriftEpisode

__all__ = ["RetrainDecision", "RetrainOutcome", "RetrainSkipped", "RetrainTrigger", "SkipReason"]


class RetrainTrigger(StrEnum):
    """What started a retrain; the value is the challenger's `trigger` tag and the flow's `trigger` parameter."""

    DRIFT = "drift"  # a drift episode (the `prefix.drift.detected` automation, or `prefixctl retrain` after drift)
    MANUAL = "manual"  # a person, with no drift episode to learn from

    @classmethod
    def parse(cls, value: str | RetrainTrigger) -> RetrainTrigger:
        """The trigger `value` names; ConfigError in one line for any other word."""
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"a retrain trigger must be one of {[t.value for t in cls]}, got {value!r}") from None


class SkipReason(StrEnum):
    """Why a retrain trained nothing (the champion keeps serving)."""

    COOLDOWN = "cooldown"  # the task was retrained less than `cooldown_minutes` ago
    RUNNING = "running"  # another retrain of the task holds the claim right now
    TOO_FEW_LABELS = "too_few_labels"
    UNKNOWN_LABELS = "unknown_labels"  # feedback names labels the champion does not have


class RetrainSkipped(PrefixRegistryError):
    """A retrain that did not start (cooldown, another retrain running, too little fresh data): the champion keeps
    serving. `cause` says which, the message says it for people."""

    def __init__(self, message: str, cause: SkipReason) -> None:
        super().__init__(message)
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle their args only: keep the cause across processes (a Prefect task, a worker).
        return (type(self), (str(self), self.cause))


# The outcomes a retrain decides (SKIPPED is a RetrainSkipped, the rolled-back ones come later).
DECIDED = (RetrainOutcome.PROMOTED, RetrainOutcome.ROLLOUT_STARTED, RetrainOutcome.KEPT_CHAMPION)


@dataclass(frozen=True)
class RetrainDecision:
    """What a retrain decided and why: the judge's answer, recorded on the challenger, not yet acted on.

    Attributes:
        outcome: PROMOTED (the challenger should replace the champion at once), ROLLOUT_STARTED (it won, and the
            policy's `promotion` rolls it out as a shadow or canary that the rollout judge promotes or rolls back),
            or KEPT_CHAMPION.
        trigger: what started the retrain.
        champion_scores / challenger_scores: headline metrics per judge set (`fresh_holdout`, `reference_test`).
        data: sizes of the data the challenger was trained and judged on, `since` where fresh data starts.
        drift: the drift episode that started the retrain, if any (the monitoring layer's own value).
    """

    task: str
    champion_version: str
    challenger_version: str
    outcome: RetrainOutcome
    reason: str
    trigger: RetrainTrigger
    champion_scores: dict[str, Any] = field(default_factory=dict)
    challenger_scores: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    drift: DriftEpisode | None = None
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.outcome not in DECIDED:
            raise ValueError(f"a retrain decision is one of {[o.value for o in DECIDED]}; got outcome {self.outcome!r}")
        object.__setattr__(self, "trigger", RetrainTrigger.parse(self.trigger))

    @property
    def promoted(self) -> bool:
        """Whether the challenger is to replace the champion at once (the orchestrator then promotes it)."""
        return self.outcome is RetrainOutcome.PROMOTED

    @property
    def won(self) -> bool:
        """Whether the challenger beat the champion (promoted at once, or rolled out)."""
        return self.outcome is not RetrainOutcome.KEPT_CHAMPION

    @property
    def verdict(self) -> str:
        """The outcome in words for people: `promoted v2`, `rollout of v2 started`, `kept v1`."""
        if self.outcome is RetrainOutcome.ROLLOUT_STARTED:
            return f"rollout of v{self.challenger_version} started (champion v{self.champion_version} still serves)"
        return f"promoted v{self.challenger_version}" if self.promoted else f"kept v{self.champion_version}"

    @property
    def drift_verdict(self) -> dict[str, Any] | None:
        """The brief of the drift episode that started the retrain (`DriftEpisode.brief()`), if any."""
        return self.drift.brief() if self.drift is not None else None

    def summary(self) -> dict[str, Any]:
        """The decision as JSON-ready values: what `prefixctl retrain --json` prints and the retrain flow returns."""
        return copy.deepcopy(
            {
                "task": self.task,
                "champion_version": self.champion_version,
                "challenger_version": self.challenger_version,
                "promoted": self.promoted,
                "outcome": self.outcome.value,
                "reason": self.reason,
                "trigger": self.trigger.value,
                "champion_scores": self.champion_scores,
                "challenger_scores": self.challenger_scores,
                "data": self.data,
                "drift_verdict": self.drift_verdict,
                "decided_at": self.decided_at,
            }
        )
