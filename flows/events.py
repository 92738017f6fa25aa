"""The Prefect events prefix-registry emits, and the resource each is about."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefix_registry.monitoring.drift import DriftVerdict
    from prefix_registry.registry.store import AliasChange

DRIFT_DETECTED = "prefix.drift.detected"
# An alias moved (`prefixctl promote` / `rollback`, a retrain's promotion): about the model, not the task's traffic.
MODEL_PROMOTED = "prefix.model.promoted"
MODEL_ROLLED_BACK = "prefix.model.rolled-back"
ALIAS_EVENTS = {"promote": MODEL_PROMOTED, "rollback": MODEL_ROLLED_BACK}
MODEL_RESOURCE_PREFIX = "prefix-registry.model."
RESOURCE_PREFIX = "prefix-registry.task."
TASK_LABEL = "prefix-registry.task"
VERSION_LABEL = "prefix-registry.version"
# The payload key naming the monitoring run that found the drift: the retrain judges exactly that run.
MONITORING_RUN_KEY = "monitoring_run_id"


def task_resource(task: str, version: str) -> dict[str, str]:
    """The event resource for a task: `prefix-registry.task.<task>`, labelled with task and version."""
    return {
        "prefect.resource.id": f"{RESOURCE_PREFIX}{task}",
        "prefect.resource.name": task,
        TASK_LABEL: task,
        VERSION_LABEL: version,
    }


def emit_drift_event(verdict: DriftVerdict, monitoring_run_id: str) -> str | None:
    """Emit `prefix.drift.detected` for the verdict's task; returns the event id (None when events are not sent).

    The payload names the monitoring run that holds the verdict, plus a few facts for people reading the event.
    """
    from prefect.events import emit_event

    payload = {
        MONITORING_RUN_KEY: monitoring_run_id,
        "drifted_signals": verdict.drifted_signals,
        "window_sizes": verdict.window_sizes,
        "checked_at": verdict.checked_at,
    }
    event = emit_event(event=DRIFT_DETECTED, resource=task_resource(verdict.task, verdict.version), payload=payload)
    return str(event.id) if event is not None else None


def model_resource(task: str, alias: str, version: str) -> dict[str, str]:
    """The event resource for a registered model: `prefix-registry.model.<task>`, labelled with alias and version."""
    return {
        "prefect.resource.id": f"{MODEL_RESOURCE_PREFIX}{task}",
        "prefect.resource.name": task,
        TASK_LABEL: task,
        VERSION_LABEL: version,
        "prefix-registry.alias": alias,
    }


def alias_event(change: AliasChange) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(event name, resource, payload) of `prefix.model.promoted` / `prefix.model.rolled-back` for an alias move."""
    payload = {
        "alias": change.alias,
        "from_version": change.from_version,
        "to_version": change.to_version,
        "actor": change.event.actor,
        "reason": change.event.reason,
        "at": change.event.at,
    }
    name = ALIAS_EVENTS.get(change.event.action, f"prefix.model.{change.event.action}")
    return name, model_resource(change.task, change.alias, change.to_version), payload


def emit_stored_event(name: str, resource: dict[str, str], payload: dict[str, Any]) -> str | None:
    """Emit an event kept as (name, resource, payload); returns its id (None when events are not sent)."""
    from prefect.events import emit_event

    event = emit_event(event=name, resource=resource, payload=payload)
    return str(event.id) if event is not None else None
