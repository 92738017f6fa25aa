"""Acting on retrain decisions: the one place that moves the champion after a retrain.

    drift episode (or none) --retrain--> RetrainDecision --act--> champion moved (PROMOTED) or left (KEPT_CHAMPION)
                                                         --notify--> the retrain_decision alert

`prefixctl retrain` and the `retrain-prefix` Prefect flow both call `retrain_and_act`, so both take the same
cross-process claim (`healing.retraining.claim_retrain`), judge the same way and act the same way. A promotion
goes through `PrefixRegistry.promote`, so the registry's alias observers (alerts, Prefect events, pushes to
servers) hear of it as they hear of `prefixctl promote`.

How a winner is rolled out is a `PromotionMode`; only DIRECT (the challenger becomes champion at once) exists.
A shadow or canary rollout is a new mode with its own function in `_ROLLOUTS`: the decision stays the same value.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from prefix_registry.healing.decision import RetrainDecision, RetrainOutcome, RetrainTrigger
from prefix_registry.healing.retrain_policy import RetrainPolicy
from prefix_registry.healing.retraining import notify_decision, retrain
from prefix_registry.monitoring.drift_runs import DriftEpisode, drift_episode, latest_drift_episode
from prefix_registry.registry.aliases import CHAMPION
from prefix_registry.registry.store import AliasChange, PrefixRegistry
from prefix_registry.traffic.prediction_log import PredictionLog

__all__ = ["PromotionMode", "act", "retrain_and_act", "triggering_drift"]


class PromotionMode(StrEnum):
    """How a winning challenger replaces the champion."""

    DIRECT = "direct"  # the champion alias moves to the challenger at once


def _promote_directly(registry: PrefixRegistry, decision: RetrainDecision) -> AliasChange:
    return registry.promote(
        decision.task,
        decision.challenger_version,
        CHAMPION,
        reason=f"retrain ({decision.trigger}): {decision.reason}",
    )


# One function per mode: a rollout mode added later (shadow, canary) adds its entry here.
_ROLLOUTS: dict[PromotionMode, Callable[[PrefixRegistry, RetrainDecision], AliasChange]] = {
    PromotionMode.DIRECT: _promote_directly,
}


def act(
    registry: PrefixRegistry, decision: RetrainDecision, mode: PromotionMode = PromotionMode.DIRECT
) -> AliasChange | None:
    """Carry out `decision`: roll a PROMOTED challenger out as `mode` says; a KEPT_CHAMPION decision moves nothing.

    Returns the alias move made, or None. Registry errors (the baseline gate, the alias lock) propagate as they do
    for `prefixctl promote`: the decision stays recorded on the challenger either way.
    """
    if decision.outcome is not RetrainOutcome.PROMOTED:
        return None
    return _ROLLOUTS[PromotionMode(mode)](registry, decision)


def triggering_drift(registry: PrefixRegistry, task: str, monitoring_run_id: str | None = None) -> DriftEpisode | None:
    """The drift episode a retrain learns from: the one of monitoring run `monitoring_run_id` when named (a
    RegistryError if that run found no drift), else the task's latest judged monitoring run's, if it drifted."""
    if monitoring_run_id:
        return drift_episode(registry, task, monitoring_run_id)
    return latest_drift_episode(registry, task)


def retrain_and_act(
    registry: PrefixRegistry,
    log: PredictionLog,
    task: str,
    policy: RetrainPolicy | None = None,
    drift: DriftEpisode | None = None,
    trigger: RetrainTrigger | None = None,
    since: datetime | None = None,
    mode: PromotionMode = PromotionMode.DIRECT,
    progress: bool = False,
) -> RetrainDecision:
    """Retrain `task` (see `healing.retraining.retrain`), act on the decision, and send its alert.

    Args:
        drift: the drift episode that started the retrain, if any (see `triggering_drift`).
        trigger: what started it (default: DRIFT with an episode, else MANUAL).
        mode: how a winning challenger is rolled out.
    Returns:
        The decision, already acted on. Raises RetrainSkipped (with its `cause`) when no challenger was trained.
    """
    if trigger is None:
        trigger = RetrainTrigger.DRIFT if drift is not None else RetrainTrigger.MANUAL
    decision = retrain(registry, log, task, policy, trigger=trigger, drift=drift, since=since, progress=progress)
    act(registry, decision, mode)
    notify_decision(decision, registry.settings)
    return decision
