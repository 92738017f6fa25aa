"""The alerts prefix-registry sends: drift found, an alias moved, a retrain decided."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prefix_registry.monitoring.alerts.dispatcher import DispatchReport, send_alert
from prefix_registry.monitoring.alerts.model import Alert

if TYPE_CHECKING:
    from prefix_registry.monitoring.drift import DriftVerdict
    from prefix_registry.monitoring.retraining import RetrainDecision
    from prefix_registry.registry.store import AliasChange
    from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

# The alert kind and severity of each alias action recorded by the registry.
ALIAS_ALERTS = {"promote": ("promotion", "info"), "rollback": ("rollback", "warning")}


def drift_alert(verdict: DriftVerdict, monitoring_run_id: str | None = None) -> Alert:
    """A "drift_detected" warning: the signals that raised the alarm, every signal's score, the window sizes."""
    signals = {
        name: {
            "score": signal.score,
            "threshold": signal.threshold,
            "drifted": signal.drifted,
            "alarm": signal.alarm,
            "method": signal.method,
        }
        for name, signal in verdict.signals.items()
    }
    alarms = verdict.drifted_signals
    if alarms:
        what = f"{len(alarms)} of {len(signals)} signal(s) drifted: {', '.join(alarms)}"
    else:
        what = "drift detected" if verdict.drift_detected else "no signal over its threshold"
    details = {
        "version": verdict.version,
        "drift_detected": verdict.drift_detected,
        "drifted_signals": alarms,
        "current_size": verdict.current.get("size"),
        "reference_size": verdict.reference.get("size"),
        "signals": signals,
        "monitoring_run_id": monitoring_run_id,
    }
    title = f"{verdict.task} v{verdict.version}: {what}"
    return Alert(kind="drift_detected", task=verdict.task, title=title, details=details, severity="warning")


def alias_change_alert(change: AliasChange, kind: str | None = None) -> Alert:
    """A "promotion" (info) or "rollback" (warning) alert from a registry `AliasChange`.

    `kind` defaults to what the change records (`promote` -> "promotion", `rollback` -> "rollback").
    """
    kinds = {alert_kind: severity for alert_kind, severity in ALIAS_ALERTS.values()}
    kind = kind or ALIAS_ALERTS[change.event.action][0]
    if kind not in kinds:
        raise ValueError(f"alias change kind must be one of {', '.join(kinds)}, got {kind!r}")
    before = f"version {change.from_version}" if change.from_version else "unset"
    if kind == "promotion":
        title = f"{change.task}: {change.alias} promoted to version {change.to_version} (was {before})"
    else:
        title = f"{change.task}: {change.alias} rolled back from {before} to version {change.to_version}"
    return Alert(kind=kind, task=change.task, title=title, details=change.summary(), severity=kinds[kind])


def alert_alias_change(
    change: AliasChange, kind: str | None = None, settings: Settings | None = None
) -> DispatchReport | None:
    """Tell the webhooks that an alias moved; synchronous, bounded by timeouts.

    Returns the report, or None when no webhook is configured or the outbox itself failed. Never raises
    because of a receiver: the registry change already happened and the alert waits in the outbox.
    """
    alert = alias_change_alert(change, kind)
    try:
        return send_alert(alert, settings)
    except Exception as exc:  # the alias already moved; a broken outbox must not turn that into an error
        logger.warning("could not queue %s alert for %s: %s", alert.kind, change.task, type(exc).__name__)
        return None


def retrain_decision_alert(decision: RetrainDecision) -> Alert:
    """An info alert for a promoted challenger, a warning for a kept champion."""
    title = (
        f"{decision.task}: challenger v{decision.challenger_version} promoted over v{decision.champion_version}"
        if decision.promoted
        else f"{decision.task}: kept champion v{decision.champion_version}; challenger "
        f"v{decision.challenger_version} not promoted"
    )
    return Alert(
        kind="retrain_decision",
        task=decision.task,
        title=title,
        severity="info" if decision.promoted else "warning",
        details={
            "reason": decision.reason,
            "champion": decision.champion_scores,
            "challenger": decision.challenger_scores,
            "data": decision.data,
        },
    )
