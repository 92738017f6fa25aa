"""One monitoring pass started from code (the demo, a script): through the `monitor-prefix` deployment when a flow
runner serves it, else in this process.

    Prefect answers, `monitor-prefix` Ready  -> a flow run of the deployment, run by `prefixctl flows serve`
                                                (listed on the deployment's Runs tab like its scheduled runs)
    otherwise                                -> `monitor_prefix_flow` here, as before (a flow run without deployment)

A drift event the pass emits starts `retrain-prefix` through its automation either way.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from uuid import UUID

from prefix_registry.errors import PrefixRegistryError
from prefix_registry.flows.event_outbox import prefect_reachable
from prefix_registry.monitoring.drift_config import DEFAULT_CURRENT_WINDOW

MONITOR_DEPLOYMENT = "monitor-prefix/monitor-prefix"

logger = logging.getLogger(__name__)


class MonitoringPassFailed(PrefixRegistryError):
    """The deployment's flow run ended in another state than Completed, or did not end in time."""


def run_monitoring_pass(
    tasks: list[str] | None = None,
    current_last: int = DEFAULT_CURRENT_WINDOW,
    timeout: float = 900.0,
) -> list[dict[str, Any]]:
    """`monitor_prefix_flow`'s summaries for `tasks`: from a run of the `monitor-prefix` deployment when a flow
    runner serves it (Ready), else from the flow run here.

    Raises MonitoringPassFailed when the deployment's run fails or does not finish within `timeout` seconds.
    """
    from prefix_registry.flows.monitor import monitor_prefix_flow

    deployment_id = ready_monitor_deployment()
    if deployment_id is None:
        return monitor_prefix_flow(tasks=tasks, current_last=current_last)
    from prefect.client.orchestration import get_client

    parameters = {"tasks": tasks, "current_last": current_last}
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
        while not (run.state and run.state.is_final()) and time.monotonic() < deadline:
            time.sleep(1)
            run = client.read_flow_run(run.id)
    state = run.state
    if state is None or not state.is_final():
        raise MonitoringPassFailed(
            f"the monitor-prefix run {run.name} did not finish within {timeout:.0f} s "
            f"(state {state.name if state else 'none'}); is `prefixctl flows serve` still running?"
        )
    if not state.is_completed():
        raise MonitoringPassFailed(f"the monitor-prefix run {run.name} ended {state.name}: {state.message}")
    summaries = state.result(raise_on_failure=True)
    if not isinstance(summaries, list):
        raise MonitoringPassFailed(f"the monitor-prefix run {run.name} returned {type(summaries).__name__}, not a list")
    return summaries


def ready_monitor_deployment(health_timeout: float = 2.0) -> UUID | None:
    """The id of the `monitor-prefix` deployment when Prefect answers and a runner polls it (status Ready)."""
    if not prefect_reachable(timeout=health_timeout):
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import DeploymentStatus

    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(MONITOR_DEPLOYMENT)
    except Exception as error:  # no such deployment (ObjectNotFound), or the API went away: run here
        logger.info("running the monitoring pass here: %s", error)
        return None
    return deployment.id if deployment.status == DeploymentStatus.READY else None
