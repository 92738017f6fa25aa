"""`retrain-prefix`: fresh feedback labels + replay -> warm-started challenger -> promoted only if it wins.

Started by the `prefix.drift.detected` automation with the event's monitoring-run id, so the retrain judges the
monitoring run that fired the event; started by hand, it learns from the champion's traffic since it was promoted.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.concurrency.sync import concurrency

from prefix_registry.monitoring.drift_runs import DriftEpisode
from prefix_registry.monitoring.retraining import RetrainDecision, RetrainPolicy, RetrainSkipped


@task(name="drift-episode", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def drift_episode(task_name: str, monitoring_run_id: str | None) -> DriftEpisode | None:
    """The drift episode of the given monitoring run, or of the latest one when no run is named."""
    from prefix_registry.monitoring.drift_runs import drift_episode as read_episode
    from prefix_registry.monitoring.drift_runs import latest_drift_episode
    from prefix_registry.registry.store import PrefixRegistry

    registry = PrefixRegistry()
    if monitoring_run_id:
        return read_episode(registry, task_name, monitoring_run_id)
    get_run_logger().warning("no monitoring run named: judging the latest drift verdict of %s", task_name)
    return latest_drift_episode(registry, task_name)


@task(name="train-and-judge-challenger", cache_policy=NONE)
def train_and_judge(task_name: str, policy: RetrainPolicy, trigger: str, drift: DriftEpisode | None) -> RetrainDecision:
    from prefix_registry.monitoring.alerts import alerting_registry
    from prefix_registry.monitoring.prediction_log import PredictionLog
    from prefix_registry.monitoring.retraining import retrain

    # Alias moves of this registry alert: a promotion here tells people as `prefixctl promote` does.
    registry = alerting_registry()
    with PredictionLog.from_settings(registry.settings) as log:
        return retrain(registry, log, task_name, policy, trigger=trigger, drift=drift)


@task(name="notify", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def notify(decision: RetrainDecision) -> None:
    from prefix_registry.monitoring.retraining import notify_decision

    notify_decision(decision)


def retrain_lock_name(task_name: str) -> str:
    return f"prefix-retrain-{task_name}"


@task(name="ensure-retrain-lock", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def ensure_retrain_lock(task_name: str) -> str:
    """A global concurrency limit of 1 per task, so retrains of one task never overlap, whoever starts them."""
    from prefect.client.orchestration import get_client

    name = retrain_lock_name(task_name)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except Exception:
            client.upsert_global_concurrency_limit_by_name(name, limit=1)
    return name


@flow(name="retrain-prefix", log_prints=True, persist_result=True)
def retrain_prefix_flow(
    task: str,
    trigger: str = "manual",
    drift_event_id: str | None = None,
    policy: dict[str, Any] | None = None,
    monitoring_run_id: str | None = None,
) -> dict[str, Any]:
    """Train a challenger for `task` and promote it only when it beats the champion on fresh held-out data.

    Args:
        trigger: "drift" (the automation) or "manual".
        drift_event_id: the `prefix.drift.detected` event that started the run, for the record.
        policy: `RetrainPolicy` fields to override; an unknown key fails the run with the list of known ones.
        monitoring_run_id: the monitoring run that found the drift (from the event); its drift episode sets where
            fresh data starts.
    Returns:
        `RetrainDecision.summary()` with `skipped: False`, or `{task, skipped: True, reason, promoted: False}` when
        the retrain did not start (cooldown, too few fresh labels). A failed retrain leaves the champion serving.
    """
    logger = get_run_logger()
    retrain_policy = RetrainPolicy.from_values(policy)
    drift = drift_episode(task, monitoring_run_id) if trigger == "drift" else None
    if drift is not None:
        logger.info(
            "triggered by drift in %s (event %s, monitoring run %s, episode of %d window(s) since %s)",
            ", ".join(drift.verdict.drifted_signals),
            drift_event_id,
            drift.run_id,
            drift.windows,
            drift.started_at,
        )
    lock = ensure_retrain_lock(task)
    try:
        # A second retrain of the same task waits here, then meets the first one's cooldown.
        # The lease is renewed while this run lives; if it dies, the slot frees itself within minutes.
        with concurrency(lock, occupy=1, strict=True):
            decision = train_and_judge(task, retrain_policy, trigger, drift)
    except RetrainSkipped as skipped:
        logger.warning("retrain of %s skipped: %s", task, skipped)
        return {"task": task, "skipped": True, "reason": str(skipped), "promoted": False}
    logger.info("%s: %s (%s)", task, "PROMOTED challenger" if decision.promoted else "kept champion", decision.reason)
    notify(decision)
    return {**decision.summary(), "skipped": False}
