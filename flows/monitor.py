"""`monitor-prefix`: check each task's recent traffic for drift; on drift, alert and emit `prefix.drift.detected`."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from prefix_registry.flows.event_outbox import DriftEventOutbox, deliver_pending, emit_drift_event_durably
from prefix_registry.registry.store import PrefixRegistry


@task(name="tasks-with-a-champion", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def served_tasks(tasks: list[str] | None) -> list[str]:
    registry = PrefixRegistry()
    names = tasks or registry.tasks()
    return [name for name in names if "champion" in registry.aliases(name)]


@task(name="check-drift", retries=2, retry_delay_seconds=10, cache_policy=NONE)
def check_drift(task_name: str, current_last: int, all_versions: bool) -> dict[str, Any]:
    from prefix_registry.monitoring.monitor import MonitorRequest, run_monitor
    from prefix_registry.monitoring.prediction_log import PredictionLog

    registry = PrefixRegistry()
    with PredictionLog.from_settings(registry.settings) as log:
        outcome = run_monitor(
            registry, log, MonitorRequest(task_name, current_last=current_last, all_versions=all_versions)
        )
    verdict = outcome.summary()
    logger = get_run_logger()
    if verdict["status"] == "insufficient_data":
        logger.info("%s: %s", task_name, verdict["message"])
    elif verdict["drift_detected"]:
        logger.warning(
            "%s v%s: DRIFT in %s (current window %s, reference %s); report: MLflow run %s",
            task_name,
            verdict["version"],
            ", ".join(verdict["drifted_signals"]),
            verdict["window_sizes"]["current"],
            verdict["window_sizes"]["reference"],
            verdict["mlflow_run_id"],
        )
    else:
        logger.info(
            "%s v%s: no drift over %s predictions", task_name, verdict["version"], verdict["window_sizes"]["current"]
        )
    return verdict


@flow(name="monitor-prefix", log_prints=True)
def monitor_prefix_flow(
    tasks: list[str] | None = None, current_last: int = 500, all_versions: bool = False, emit_events: bool = True
) -> list[dict[str, Any]]:
    """One monitoring pass over `tasks` (default: every task with a champion)."""
    verdicts = []
    if emit_events:  # drift events found while Prefect was down are sent now (issue 11)
        deliver_pending(DriftEventOutbox.from_settings())
    for name in served_tasks(tasks):
        verdict = check_drift(name, current_last, all_versions)
        if verdict["drift_detected"] and emit_events:
            verdict["event_id"] = emit_drift_event_durably(name, verdict["version"], verdict)
            get_run_logger().info("emitted prefix.drift.detected for %s (event %s)", name, verdict["event_id"])
        verdicts.append(verdict)
    return verdicts
