"""The alert of an alias move (promotion or rollback), and its delivery. Drift and retrain alerts are built by the
layers that decide them (monitoring/drift_alert.py, healing/decision_alert.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prefix_registry.alerts.dispatcher import DispatchReport, send_alert
from prefix_registry.alerts.model import Alert

if TYPE_CHECKING:
    from prefix_registry.registry.store import AliasChange
    from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

# The alert kind and severity of each alias action recorded by the registry.
ALIAS_ALERTS = {"promote": ("promotion", "info"), "rollback": ("rollback", "warning")}


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
