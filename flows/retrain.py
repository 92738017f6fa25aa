"""`retrain-prefix`: fresh feedback labels + replay -> warm-started challenger -> promoted only if it wins."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.concurrency.sync import concurrency

from prefix_registry.monitoring.retraining import RetrainDecision, RetrainPolicy, RetrainSkipped
from prefix_registry.registry.store import PrefixRegistry


@task(name="drift-verdict", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def drift_verdict(task_name: str) -> dict[str, Any] | None:
    from prefix_registry.monitoring.monitor import latest_drift_verdict

    return latest_drift_verdict(PrefixRegistry(), task_name)


@task(name="train-and-judge-challenger", cache_policy=NONE)
def train_and_judge(
    task_name: str, policy: dict[str, Any], trigger: str, verdict: dict[str, Any] | None
) -> dict[str, Any]:
    from prefix_registry.monitoring.prediction_log import PredictionLog
    from prefix_registry.monitoring.retraining import retrain

    registry = PrefixRegistry()
    with PredictionLog.from_settings(registry.settings) as log:
        decision: RetrainDecision = retrain(
            registry, log, task_name, RetrainPolicy(**policy), trigger=trigger, drift_verdict=verdict
        )
    return decision.summary()


@task(name="notify", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def notify(decision: dict[str, Any]) -> None:
    from prefix_registry.monitoring.retraining import notify_decision

    notify_decision(RetrainDecision(**decision))


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
    task: str, trigger: str = "manual", drift_event_id: str | None = None, policy: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train a challenger for `task` and promote it only when it beats the champion on fresh held-out data.

    A skipped retrain (cooldown, too few fresh labels) completes with the reason; a failed one leaves the champion
    serving.
    """
    logger = get_run_logger()
    policy_values = asdict(RetrainPolicy(**(policy or {})))
    verdict = drift_verdict(task) if trigger == "drift" else None
    if verdict is not None:
        logger.info(
            "triggered by drift in %s (event %s, monitoring run %s)",
            ", ".join(verdict["drifted_signals"]),
            drift_event_id,
            verdict.get("mlflow_run_id"),
        )
    lock = ensure_retrain_lock(task)
    try:
        # A second retrain of the same task waits here, then meets the first one's cooldown.
        # The lease is renewed while this run lives; if it dies, the slot frees itself within minutes.
        with concurrency(lock, occupy=1, strict=True):
            decision = train_and_judge(task, policy_values, trigger, verdict)
    except RetrainSkipped as skipped:
        logger.warning("retrain of %s skipped: %s", task, skipped)
        return {"task": task, "skipped": True, "reason": str(skipped), "promoted": False}
    logger.info(
        "%s: %s (%s)", task, "PROMOTED challenger" if decision["promoted"] else "kept champion", decision["reason"]
    )
    notify(decision)
    return {**decision, "skipped": False}
