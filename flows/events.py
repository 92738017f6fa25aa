"""The Prefect events prefix-registry emits, and the resource each is about."""

from __future__ import annotations

from typing import Any

DRIFT_DETECTED = "prefix.drift.detected"
RESOURCE_PREFIX = "prefix-registry.task."
TASK_LABEL = "prefix-registry.task"
VERSION_LABEL = "prefix-registry.version"


def task_resource(task: str, version: str) -> dict[str, str]:
    """The event resource for a task: `prefix-registry.task.<task>`, labelled with task and version."""
    return {
        "prefect.resource.id": f"{RESOURCE_PREFIX}{task}",
        "prefect.resource.name": task,
        TASK_LABEL: task,
        VERSION_LABEL: version,
    }


def emit_drift_event(task: str, version: str, verdict: dict[str, Any]) -> str | None:
    """Emit `prefix.drift.detected` for a task; returns the event id (None when events are not being sent)."""
    from prefect.events import emit_event

    payload = {
        key: verdict.get(key) for key in ("status", "drifted_signals", "window_sizes", "checked_at", "mlflow_run_id")
    }
    event = emit_event(event=DRIFT_DETECTED, resource=task_resource(task, version), payload=payload)
    return str(event.id) if event is not None else None
