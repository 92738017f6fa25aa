"""Acting on retrain decisions: the one place that moves the champion after a retrain.

    drift episode (or none) --retrain--> RetrainDecision --act--> champion moved (PROMOTED), a rollout started
                                                                  (ROLLOUT_STARTED) or nothing (KEPT_CHAMPION)
                                                         --notify--> the retrain_decision alert

`prefixctl retrain` and the `retrain-prefix` Prefect flow both call `retrain_and_act`, so both take the same
cross-process claim (`healing.retraining.claim_retrain`), judge the same way and act the same way. A promotion
goes through `PrefixRegistry.promote`, so the registry's alias observers (alerts, Prefect events, pushes to
servers) hear of it as they hear of `prefixctl promote`.

How a winner is rolled out is the policy's `PromotionMode`: DIRECT (the challenger becomes champion at once), or a
SHADOW or CANARY rollout (healing/rollout_actions.py) that the `judge-rollout` flow or `prefixctl rollout judge`
later promotes or rolls back on live labels; the decision says which (PROMOTED or ROLLOUT_STARTED: the
challenger's `retrain_decision` tag, description, alert and the flow's Prefect tags), and the rollout's end
updates the tag (healing/rollout_actions.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from prefix_registry.healing.decision import RetrainDecision, RetrainOutcome, RetrainTrigger
from prefix_registry.healing.retrain_policy import PromotionMode, RetrainPolicy
from prefix_registry.healing.retraining import notify_decision, retrain
from prefix_registry.healing.rollout_actions import start_rollout
from prefix_registry.monitoring.drift_runs import DriftEpisode, drift_episode, latest_drift_episode
from prefix_registry.registry.aliases import CHAMPION
from prefix_registry.registry.rollouts import RolloutChange, RolloutMode
from prefix_registry.registry.store import AliasChange, PrefixRegistry
from prefix_registry.traffic.prediction_log import PredictionLog

__all__ = ["PromotionMode", "act", "retrain_and_act", "triggering_drift"]


def _promote_directly(registry: PrefixRegistry, decision: RetrainDecision) -> AliasChange:
    return registry.promote(
        decision.task,
        decision.challenger_version,
        CHAMPION,
        reason=f"retrain ({decision.trigger}): {decision.reason}",
    )


def _rollout(mode: RolloutMode) -> Callable[[PrefixRegistry, RetrainDecision, float], RolloutChange]:
    def start(registry: PrefixRegistry, decision: RetrainDecision, share: float) -> RolloutChange:
        return start_rollout(
            registry,
            decision.task,
            decision.challenger_version,
            mode,
            share,
            reason=f"retrain ({decision.trigger}): {decision.reason}",
        )

    return start


# One function per rollout mode.
_ROLLOUTS: dict[PromotionMode, Callable[[PrefixRegistry, RetrainDecision, float], RolloutChange]] = {
    PromotionMode.SHADOW: _rollout(RolloutMode.SHADOW),
    PromotionMode.CANARY: _rollout(RolloutMode.CANARY),
}


def act(
    registry: PrefixRegistry,
    decision: RetrainDecision,
    mode: PromotionMode = PromotionMode.DIRECT,
    share: float = 10.0,
) -> AliasChange | RolloutChange | None:
    """Carry out `decision`: promote a PROMOTED challenger at once (`mode` DIRECT), roll a ROLLOUT_STARTED one out
    as `mode` says (SHADOW or CANARY, at `share` percent); a KEPT_CHAMPION decision moves nothing.

    Returns the alias move made, the rollout started, or None. A `mode` that does not match the outcome (the retrain
    decides the outcome from the same policy) is a ValueError. Registry errors (the baseline gate, the alias lock, a
    rollout already running) propagate as they do for `prefixctl promote`: the decision stays recorded on the
    challenger either way.
    """
    mode = PromotionMode(mode)
    if decision.outcome is RetrainOutcome.KEPT_CHAMPION:
        return None
    if decision.outcome is RetrainOutcome.PROMOTED:
        if mode is not PromotionMode.DIRECT:
            raise ValueError(
                f"a {decision.outcome.value!r} decision is carried out by mode 'direct', got {mode.value!r}"
            )
        return _promote_directly(registry, decision)
    if mode not in _ROLLOUTS:
        raise ValueError(
            f"a {decision.outcome.value!r} decision is carried out by mode {[m.value for m in _ROLLOUTS]}, "
            f"got {mode.value!r}"
        )
    return _ROLLOUTS[mode](registry, decision, share)


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
    mode: PromotionMode | None = None,
    progress: bool = False,
) -> RetrainDecision:
    """Retrain `task` (see `healing.retraining.retrain`), act on the decision, and send its alert.

    Args:
        drift: the drift episode that started the retrain, if any (see `triggering_drift`).
        trigger: what started it (default: DRIFT with an episode, else MANUAL).
        mode: how a winning challenger is rolled out (default: the policy's `promotion`).
    Returns:
        The decision, already acted on. Raises RetrainSkipped (with its `cause`) when no challenger was trained.
    """
    if trigger is None:
        trigger = RetrainTrigger.DRIFT if drift is not None else RetrainTrigger.MANUAL
    policy = policy or RetrainPolicy()
    if mode is not None:  # the decision (tag, description, alert) says how the winner is rolled out
        policy = policy.model_copy(update={"promotion": PromotionMode(mode)})
    decision = retrain(registry, log, task, policy, trigger=trigger, drift=drift, since=since, progress=progress)
    act(registry, decision, policy.promotion, policy.rollout_share)
    notify_decision(decision, registry.settings)
    return decision
