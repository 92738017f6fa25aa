"""Deployments of the flows: monitoring and rollout judging on a schedule, retraining on the drift event, training
by hand."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from prefix_registry.errors import PrefixRegistryError
from prefix_registry.flows.events import DRIFT_DETECTED, MONITORING_RUN_KEY, RESOURCE_PREFIX, TASK_LABEL
from prefix_registry.flows.schedule import MonitorSchedule
from prefix_registry.healing.decision import RetrainTrigger
from prefix_registry.healing.retrain_policy import RetrainPolicy


class PrefectUnavailable(PrefixRegistryError):
    pass


def drift_trigger() -> Any:
    """Run `retrain-prefix` for the task named in each `prefix.drift.detected` event."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="retrain-on-drift",
        # The automation's description in Prefect's UI: which event, which match, what it runs with.
        description=(
            f"On each `{DRIFT_DETECTED}` event whose resource matches `{RESOURCE_PREFIX}*` (emitted by monitor-prefix "
            f"when a task's monitor finds drift), run retrain-prefix for the event's task (label `{TASK_LABEL}`), "
            f"with trigger=drift, the event id and the monitoring run named in the payload (`{MONITORING_RUN_KEY}`)."
        ),
        expect={DRIFT_DETECTED},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
        parameters={
            "task": f"{{{{ event.resource['{TASK_LABEL}'] }}}}",
            "trigger": RetrainTrigger.DRIFT.value,
            "drift_event_id": "{{ event.id | string }}",
            # The retrain judges the monitoring run that found the drift, not whichever ran last.
            "monitoring_run_id": f"{{{{ event.payload.{MONITORING_RUN_KEY} }}}}",
        },
    )


def build_deployments(
    schedule: MonitorSchedule | None = None, retrain_policy: RetrainPolicy | dict[str, Any] | None = None
) -> list[Any]:
    """The four runner deployments. Retraining runs one at a time: a second trigger during a retrain waits, then
    meets the cooldown.

    Args:
        schedule: the monitoring schedule (default: `MonitorSchedule()`).
        retrain_policy: the retrain's settings; only those set explicitly become the deployment's `policy`.
    """
    schedule = schedule or MonitorSchedule()
    policy = retrain_policy if isinstance(retrain_policy, RetrainPolicy) else RetrainPolicy.from_values(retrain_policy)
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from prefix_registry.flows.judge_rollout import judge_rollout_flow
    from prefix_registry.flows.monitor import monitor_prefix_flow
    from prefix_registry.flows.retrain import retrain_prefix_flow
    from prefix_registry.flows.train import train_prefix_flow

    return [
        train_prefix_flow.to_deployment(name="train-prefix", description="Train and register a prefix by hand."),
        monitor_prefix_flow.to_deployment(
            name="monitor-prefix",
            interval=timedelta(minutes=schedule.monitor_every_minutes),
            parameters={"tasks": schedule.tasks, "current_last": schedule.current_last},
            description=f"Drift check of every served task every {schedule.monitor_every_minutes:g} minutes.",
        ),
        retrain_prefix_flow.to_deployment(
            name="retrain-prefix",
            triggers=[drift_trigger()],
            parameters={"policy": policy.overrides()},
            # Queued, not dropped: the per-task lock and the cooldown turn a duplicate away once it runs.
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            description="Retrain on drift; promote only a challenger that beats the champion.",
        ),
        judge_rollout_flow.to_deployment(
            name="judge-rollout",
            interval=timedelta(minutes=schedule.judge_every_minutes),
            parameters={"tasks": schedule.tasks},
            description=f"Judge every running rollout on live labels every {schedule.judge_every_minutes:g} "
            "minutes: promote a good challenger, roll back a worse one.",
        ),
    ]


def check_prefect_api(timeout: float = 10.0) -> str:
    """The Prefect API URL, after checking that it answers; raises PrefectUnavailable with a clear message."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL")
    if not url:
        raise PrefectUnavailable(
            "no Prefect server configured: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api) to a running "
            "server (start one with `prefect server start`)"
        )
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise PrefectUnavailable(
            f"the Prefect server at {url} is unavailable ({type(error).__name__}); nothing was registered"
        ) from None
    return url


def serve_deployments(**kwargs: Any) -> None:
    """Register the deployments with the Prefect server and run them here until interrupted.

    While this runs, Prefect shows the deployments Ready: in Prefect 3 a deployment is Ready while something polls
    for its scheduled runs (this process, every `PREFECT_RUNNER_POLL_FREQUENCY` seconds), and Not Ready once nothing
    has polled for `PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS` (60). Stopping leaves the
    schedules on (Prefect's `serve` pauses them by default), so the UI never shows a monitoring schedule someone must
    remember to resume, and the next `prefixctl flows serve` picks the schedule up as it is.
    """
    check_prefect_api()
    from prefect import serve

    serve(*build_deployments(**kwargs), print_starting_message=True, pause_on_shutdown=False)
