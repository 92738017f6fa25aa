"""`monitor-prefix`: check each task's recent traffic for drift; on drift, alert and emit `prefix.drift.detected`."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from prefix_registry.flows.event_outbox import EventOutbox, deliver_pending, emit_drift_event_durably
from prefix_registry.flows.run_labels import label_flow_run, monitor_run_name
from prefix_registry.monitoring.drift import DriftStatus
from prefix_registry.monitoring.drift_config import DEFAULT_CURRENT_WINDOW
from prefix_registry.monitoring.monitor import MonitorOutcome
from prefix_registry.registry.aliases import CHAMPION
from prefix_registry.registry.store import PrefixRegistry


@task(name="tasks-with-a-champion", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def served_tasks(tasks: list[str] | None) -> list[str]:
    registry = PrefixRegistry()
    names = tasks or registry.tasks()
    return [name for name in names if CHAMPION in registry.aliases(name)]


@task(name="rollout-challenger", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def rollout_challenger(task_name: str) -> str | None:
    """The version of the task's running rollout challenger, if any: its own traffic is checked on its own."""
    rollout = PrefixRegistry().rollouts.current(task_name)
    return rollout.challenger_version if rollout is not None else None


@task(name="check-drift", retries=2, retry_delay_seconds=10, cache_policy=NONE)
def check_drift(task_name: str, current_last: int, all_versions: bool, version: str | None = None) -> MonitorOutcome:
    """One drift check of `task_name` (its champion, or `version`), recorded as a monitoring run (and alerted on
    drift)."""
    from prefix_registry.monitoring.monitor import MonitorRequest, run_monitor
    from prefix_registry.traffic.prediction_log import PredictionLog

    registry = PrefixRegistry()
    with PredictionLog.from_settings(registry.settings) as log:
        outcome = run_monitor(
            registry,
            log,
            MonitorRequest(task_name, current_last=current_last, all_versions=all_versions, version=version),
        )
    verdict = outcome.verdict
    logger = get_run_logger()
    if verdict.status is DriftStatus.INSUFFICIENT_DATA:
        logger.info("%s: %s", task_name, verdict.message)
    elif verdict.drift_detected:
        logger.warning(
            "%s v%s: DRIFT in %s (current window %s, reference %s); report: MLflow run %s",
            task_name,
            verdict.version,
            ", ".join(verdict.drifted_signals),
            verdict.window_sizes["current"],
            verdict.window_sizes["reference"],
            outcome.run_id,
        )
    else:
        logger.info("%s v%s: no drift over %s predictions", task_name, verdict.version, verdict.window_sizes["current"])
    return outcome


# The result is kept, so a pass started through the deployment (flows/monitor_pass.py) reads its summaries back.
@flow(name="monitor-prefix", flow_run_name=monitor_run_name, log_prints=True, persist_result=True)
def monitor_prefix_flow(
    tasks: list[str] | None = None,
    current_last: int = DEFAULT_CURRENT_WINDOW,
    all_versions: bool = False,
    emit_events: bool = True,
) -> list[dict[str, Any]]:
    """One monitoring pass over `tasks` (default: every task with a champion).

    Returns one summary per task (`MonitorOutcome.summary()`, plus `event_id` when a drift event was emitted).
    Drift events go through a durable outbox: one found while Prefect is down is emitted by a later pass.
    """
    summaries = []
    if emit_events:
        deliver_pending(EventOutbox.from_settings())
    for name in served_tasks(tasks):
        outcome = check_drift(name, current_last, all_versions)
        summary = outcome.summary()
        if outcome.verdict.drift_detected and emit_events and outcome.run_id:
            summary["event_id"] = emit_drift_event_durably(outcome.verdict, outcome.run_id)
            get_run_logger().info("emitted prefix.drift.detected for %s (event %s)", name, summary["event_id"])
        summaries.append(summary)
        challenger = rollout_challenger(name)
        if challenger is not None and not all_versions:
            # Each arm of a rollout on its own traffic (the champion's window above holds only its own rows). No
            # drift event for a challenger: a retrain learns from the champion's drift; the rollout judge decides.
            summaries.append(
                {**check_drift(name, current_last, all_versions, challenger).summary(), "arm": "challenger"}
            )
    # Tags say which tasks were checked and what was found: `task:reviews`, `drift:reviews` or `ok:reviews`.
    label_flow_run(tags=[tag for s in summaries for tag in (f"task:{s['task']}", f"{s['status']}:{s['task']}")])
    return summaries
