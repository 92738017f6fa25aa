"""The story the MLflow and Prefect UIs must tell, built through the product's own code paths with tiny settings:

v1  trained on RT, promoted to champion; IMDB traffic arrives with feedback labels
v2  retrained from v1 on that fresh feedback, judged against v1 on the same sets, promoted;
    then rolled back (champion -> v1) with a reason

`build_story` retrains in this process by hand (trigger manual). `build_drift_story` tells it as in production: a
monitoring run finds the drift (verdict, thresholds and Evidently report in MLflow), then runs of the `retrain-prefix`
deployment retrain from that run (trigger drift): the first skips (too few fresh labels for its policy), the second
trains v2 and promotes it, a third (manual) meets the cooldown and skips; `rollback-prefix` rolls back. The Prefect
server must already run (tests/servers/prefect_server.py); the deployment's runs are executed in this process, as a
flow runner would execute them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefix_registry.alerts import alerting_registry
from prefix_registry.healing.orchestrator import act
from prefix_registry.healing.retrain_policy import RetrainPolicy
from prefix_registry.healing.retraining import retrain
from prefix_registry.monitoring.drift_config import DriftConfig
from prefix_registry.monitoring.monitor import MonitorOutcome, MonitorRequest, run_monitor
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.traffic.prediction_log import PredictionLog
from tests.conftest import log_labelled_traffic, tiny_config, tiny_data

TASK = "sentiment"
ROLLBACK_REASON = "v2 misreads sarcastic reviews in production"
TRAFFIC = 120
# Promotes whatever the tiny challenger scores: the story needs a promotion to roll back.
STORY_POLICY = RetrainPolicy(
    min_fresh_labels=60, cooldown_minutes=0, epochs=1, margin=-1.0, max_reference_regression=1.0
)
# v1's validation split (its drift reference) holds 24 texts: windows that small are judged here.
STORY_DRIFT = DriftConfig(min_window=20, min_labelled=20)


@dataclass(frozen=True)
class Story:
    registry: PrefixRegistry
    decision: dict[str, Any]  # RetrainDecision.summary()
    monitoring: MonitorOutcome | None = None  # the drift check that fired the retrain (build_drift_story)
    retrain_flow_run_id: str | None = None  # the retrain's Prefect flow run (build_drift_story)
    retrain_runs: tuple[str, ...] = ()  # names of the retrain deployment's runs, in order (build_drift_story)
    retrain_deployment_id: str | None = None  # the `retrain-prefix` deployment (build_drift_story)
    rollback_flow_run_id: str | None = None  # the rollback's Prefect flow run (build_drift_story)


def build_story() -> Story:
    """v1 champion, v2 retrained by hand and promoted, then rolled back; in the current project home."""
    registry = _champion_with_fresh_traffic()
    with PredictionLog.from_settings(registry.settings) as log:
        decision = retrain(registry, log, TASK, STORY_POLICY)
    act(registry, decision)
    assert decision.promoted, decision.reason
    registry.rollback(TASK, reason=ROLLBACK_REASON)
    return Story(registry, decision.summary())


def build_drift_story() -> Story:
    """v1 champion, drift found by a monitoring run, three runs of the retrain deployment (skipped, v2 promoted,
    skipped), then a rollback by the `rollback-prefix` flow."""
    from prefix_registry.flows.rollback import rollback_prefix_flow

    registry = _champion_with_fresh_traffic()
    with PredictionLog.from_settings(registry.settings) as log:
        request = MonitorRequest(TASK, current_last=TRAFFIC)
        monitoring = run_monitor(registry, log, request, config=STORY_DRIFT, send_alerts=False)
    assert monitoring.verdict.drift_detected and monitoring.run_id, monitoring.verdict.to_dict()
    deployment_id = _apply_deployments()
    drift = {"trigger": "drift", "monitoring_run_id": monitoring.run_id}
    waiting = _run_deployment(
        deployment_id, {**drift, "policy": {**STORY_POLICY.overrides(), "min_fresh_labels": 100_000}}
    )
    assert waiting.result()["skipped"] is True
    state = _run_deployment(deployment_id, {**drift, "policy": STORY_POLICY.overrides()})
    decision = state.result()
    assert decision["promoted"], decision
    cooling = _run_deployment(deployment_id, {"policy": {**STORY_POLICY.overrides(), "cooldown_minutes": 60}})
    assert cooling.result()["skipped"] is True
    rollback = rollback_prefix_flow(task=TASK, reason=ROLLBACK_REASON, return_state=True)
    rollback.result()
    names = tuple(_flow_run_name(run) for run in (waiting, state, cooling))
    return Story(
        registry,
        decision,
        monitoring,
        str(state.state_details.flow_run_id),
        retrain_runs=names,
        retrain_deployment_id=str(deployment_id),
        rollback_flow_run_id=str(rollback.state_details.flow_run_id),
    )


def _apply_deployments() -> Any:
    """Register the three deployments as `prefixctl flows serve` does; returns the retrain deployment's id."""
    from prefix_registry.flows.deployments import build_deployments

    ids = {deployment.name: deployment.apply() for deployment in build_deployments(retrain_policy=STORY_POLICY)}
    return ids["retrain-prefix"]


def _run_deployment(deployment_id: Any, parameters: dict[str, Any]) -> Any:
    """A run of the deployment for TASK with `parameters`, executed here as a flow runner would; its final state."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from prefix_registry.flows.retrain import retrain_prefix_flow

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(deployment_id, parameters={"task": TASK, **parameters})
    return run_flow(retrain_prefix_flow, flow_run=flow_run, return_type="state")


def _flow_run_name(state: Any) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def _champion_with_fresh_traffic() -> PrefixRegistry:
    """v1 trained on RT and promoted; then IMDB traffic served by it, with its true labels as feedback."""
    registry = alerting_registry()
    train_and_register(registry, TASK, tiny_data(limit=240), tiny_config(), promote=True, progress=False)
    log_labelled_traffic(registry, TASK, tiny_data(limit=TRAFFIC, source="imdb").frame)
    return registry
