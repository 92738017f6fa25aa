"""The alert of a retrain decision: info for a promoted or rolled-out challenger, a warning for a kept champion."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefix_registry.alerts.model import Alert

if TYPE_CHECKING:
    from prefix_registry.healing.decision import RetrainDecision


def retrain_decision_alert(decision: RetrainDecision) -> Alert:
    """An info alert for a promoted challenger, a warning for a kept champion."""
    if decision.promoted:
        title = f"{decision.task}: challenger v{decision.challenger_version} promoted over v{decision.champion_version}"
    elif decision.won:
        title = (
            f"{decision.task}: challenger v{decision.challenger_version} beat v{decision.champion_version}; "
            "a rollout starts (the rollout judge promotes or rolls it back)"
        )
    else:
        title = (
            f"{decision.task}: kept champion v{decision.champion_version}; challenger "
            f"v{decision.challenger_version} not promoted"
        )
    return Alert(
        kind="retrain_decision",
        task=decision.task,
        title=title,
        severity="info" if decision.won else "warning",
        details={
            "outcome": decision.outcome.value,
            "reason": decision.reason,
            "champion": decision.champion_scores,
            "challenger": decision.challenger_scores,
            "data": decision.data,
        },
    )
