"""Acting on rollouts: start one, judge it and carry the verdict out, stop one; each with its alert.

    start_rollout(registry, task, version, mode, share)  -> RolloutChange      (alert: rollout_started, info)
    judge_rollout(registry, log, task, policy)           -> RolloutJudgement   (acts on the verdict:)
        PROMOTE   the challenger becomes champion through the AliasMover (its promotion alert), rollout ended
        ROLLBACK  rollout ended, all traffic back on the champion            (alert: rollout_rollback, warning)
        CONTINUE  nothing moves
    stop_rollout(registry, task, reason)                 -> RolloutChange      (alert: rollout_stopped, info)

Each start and end is pushed to the running servers like an alias move (alerts/server_push.py: they re-read the
task, rollout included), when the registry pushes its moves (`alerting_registry()`); polling covers the rest.

`prefixctl rollout ...`, the `judge-rollout` flow and the retrain's orchestrator all call these, so a rollout is
started, judged and ended one way. The verdict itself is healing/rollout_judge.py's pure `judge`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prefix_registry.alerts.dispatcher import send_alert
from prefix_registry.alerts.model import Alert
from prefix_registry.alerts.server_push import AliasPush
from prefix_registry.healing.rollout_judge import Decision, JudgePolicy, Verdict, judge
from prefix_registry.healing.rollout_stats import RolloutStats, stats_for
from prefix_registry.registry.rollouts import RolloutAction, RolloutChange, RolloutError, RolloutMode
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.versions import TAG_RETRAIN_DECISION, RetrainOutcome
from prefix_registry.traffic.prediction_log import PredictionLog

JUDGE_ACTOR = "rollout-judge"


@dataclass(frozen=True)
class RolloutJudgement:
    """A judged rollout: the arms' statistics, the decision, and what was done about it (None: CONTINUE)."""

    stats: RolloutStats
    decision: Decision
    change: RolloutChange | None

    def summary(self) -> dict[str, Any]:
        return {
            **self.decision.summary(),
            "task": self.stats.rollout.task,
            "acted": self.change.summary() if self.change else None,
            "stats": self.stats.summary(),
        }


def push_rollout(registry: PrefixRegistry, change: RolloutChange) -> None:
    """Tell the running servers that the task's rollout changed, through the registry's alias push (if any)."""
    body = json.dumps({"task": change.rollout.task, "rollout": change.summary()}, separators=(",", ":"), sort_keys=True)
    for observer in registry.alias_observers:
        if isinstance(observer, AliasPush):
            observer.notify(change.rollout.task, body.encode("utf-8"), f"rollout {change.action}")


# What a retrain's "rollout started" challenger's `retrain_decision` tag says once its rollout ends.
_ENDED_OUTCOME = {
    RolloutAction.PROMOTE: RetrainOutcome.PROMOTED,
    RolloutAction.ROLLBACK: RetrainOutcome.ROLLOUT_ROLLED_BACK,
    RolloutAction.STOP: RetrainOutcome.ROLLOUT_ROLLED_BACK,
}


def record_rollout_end(registry: PrefixRegistry, change: RolloutChange) -> None:
    """Update the `retrain_decision` tag of a retrain's rolled-out challenger to how its rollout ended (a version
    rolled out by hand has no such tag and keeps none)."""
    task, version = change.rollout.task, change.rollout.challenger_version
    tags = registry.version(task, version).tags or {}
    if tags.get(TAG_RETRAIN_DECISION) == RetrainOutcome.ROLLOUT_STARTED and change.action in _ENDED_OUTCOME:
        registry.set_version_tags(task, version, {TAG_RETRAIN_DECISION: _ENDED_OUTCOME[change.action].value})


def start_rollout(
    registry: PrefixRegistry,
    task: str,
    version: str | int,
    mode: RolloutMode,
    share: float,
    actor: str | None = None,
    reason: str | None = None,
) -> RolloutChange:
    """Start a rollout (registry/rollouts.py) and send its info alert."""
    change = registry.rollouts.start(task, version, mode, share, actor=actor, reason=reason)
    push_rollout(registry, change)
    rollout = change.rollout
    title = (
        f"{task}: {rollout.mode} rollout of v{rollout.challenger_version} at {rollout.share:g}% "
        f"beside champion v{rollout.champion_version}"
    )
    _alert(registry, "rollout_started", task, title, rollout.summary())
    return change


def stop_rollout(
    registry: PrefixRegistry, task: str, reason: str | None = None, actor: str | None = None
) -> RolloutChange:
    """End the task's rollout by hand: all traffic back on the champion."""
    change = _end(registry, task, RolloutAction.STOP, reason or "stopped by hand", actor)
    title = (
        f"{task}: rollout of v{change.rollout.challenger_version} stopped; champion "
        f"v{change.rollout.champion_version} serves all traffic"
    )
    _alert(registry, "rollout_stopped", task, title, change.summary())
    return change


def judge_rollout(
    registry: PrefixRegistry, log: PredictionLog, task: str, policy: JudgePolicy | None = None, act: bool = True
) -> RolloutJudgement:
    """Judge the task's running rollout on its live statistics and, when `act`, carry the verdict out."""
    rollout = registry.rollouts.current(task)
    if rollout is None:
        raise RolloutError(f"task {task!r} has no rollout running: nothing to judge")
    stats = stats_for(registry, log, rollout)
    decision = judge(stats.champion, stats.challenger, policy)
    if not act or decision.verdict is Verdict.CONTINUE:
        return RolloutJudgement(stats, decision, None)
    if decision.verdict is Verdict.PROMOTE:
        # The promotion alert comes from the alias move itself.
        return RolloutJudgement(stats, decision, _end(registry, task, RolloutAction.PROMOTE, decision.reason))
    change = _end(registry, task, RolloutAction.ROLLBACK, decision.reason)
    title = (
        f"{task}: challenger v{rollout.challenger_version} rolled back automatically; champion "
        f"v{rollout.champion_version} serves all traffic"
    )
    details = {**change.summary(), "challenger": stats.challenger.summary(), "champion": stats.champion.summary()}
    _alert(registry, "rollout_rollback", task, title, details, severity="warning")
    return RolloutJudgement(stats, decision, change)


def _end(
    registry: PrefixRegistry, task: str, action: RolloutAction, reason: str, actor: str | None = JUDGE_ACTOR
) -> RolloutChange:
    """End the task's rollout, tell the servers, and record the end on a retrain's challenger."""
    change = registry.rollouts.end(task, action, reason, actor=actor)
    push_rollout(registry, change)
    record_rollout_end(registry, change)
    return change


def _alert(
    registry: PrefixRegistry, kind: str, task: str, title: str, details: dict[str, Any], severity: str = "info"
) -> None:
    send_alert(Alert(kind=kind, task=task, title=title, severity=severity, details=details), settings=registry.settings)
