"""`retrain-prefix`: fresh feedback labels + replay -> warm-started challenger -> promoted only if it wins.

The retrain itself is `healing.orchestrator.retrain_and_act`, the same call `prefixctl retrain` makes; this flow
adds what Prefect shows: run names and tags, the decision artifact, links to the monitoring run.

Started by the `prefix.drift.detected` automation with the event's monitoring-run id, so the retrain judges the
monitoring run that fired the event; started by hand, it learns from the champion's traffic since it was promoted.

In Prefect's UI the run is named `retrain <task> v<champion> (<trigger>)`, then `... → v<challenger> ...`, tagged
with task, trigger and versions, and carries its decision (or why it skipped) as a markdown artifact; the monitoring
run that fired it is tagged `caused_retrain_run` with this run's name and id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.concurrency.sync import concurrency
from prefect.states import Completed, State

from prefix_registry.flows import retrain_artifacts
from prefix_registry.flows.run_labels import label_flow_run, retrain_name, retrain_run_name
from prefix_registry.healing.decision import RetrainOutcome, RetrainTrigger, SkipReason
from prefix_registry.healing.retrain_policy import RetrainPolicy
from prefix_registry.healing.retraining import RetrainDecision, RetrainSkipped
from prefix_registry.kinds import TaskKind
from prefix_registry.monitoring.drift_runs import DriftEpisode

# The tag of a retrain run that trained nothing (its state is a plain Completed, its message says why).
SKIPPED_TAG = "skipped"


@dataclass(frozen=True)
class SkippedRetrain:
    """A retrain that trained nothing (cooldown, another retrain running, too few fresh labels): a normal outcome,
    not a failed task."""

    task: str
    reason: str
    cause: SkipReason


@task(name="drift-episode", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def drift_episode(task_name: str, monitoring_run_id: str | None) -> DriftEpisode | None:
    """The drift episode of the given monitoring run, or of the latest one when no run is named."""
    from prefix_registry.healing.orchestrator import triggering_drift
    from prefix_registry.registry.store import PrefixRegistry

    if not monitoring_run_id:
        get_run_logger().warning("no monitoring run named: judging the latest drift verdict of %s", task_name)
    return triggering_drift(PrefixRegistry(), task_name, monitoring_run_id)


@task(name="train-and-judge-challenger", cache_policy=NONE)
def train_and_judge(
    task_name: str, policy: RetrainPolicy, trigger: RetrainTrigger, drift: DriftEpisode | None
) -> RetrainDecision | SkippedRetrain:
    """The orchestrator's retrain -> act -> alert, as `prefixctl retrain` runs it; a skip is a value here."""
    from prefix_registry.flows.alias_events import announcing_registry
    from prefix_registry.healing.orchestrator import retrain_and_act
    from prefix_registry.traffic.prediction_log import PredictionLog

    # Alias moves of this registry alert and are Prefect events: a promotion here tells people as `prefixctl
    # promote` does.
    registry = announcing_registry()
    with PredictionLog.from_settings(registry.settings) as log:
        try:
            return retrain_and_act(registry, log, task_name, policy, drift=drift, trigger=trigger)
        except RetrainSkipped as skipped:
            return SkippedRetrain(task_name, str(skipped), skipped.cause)


@task(name="read-champion", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def _challenger_kind(task_name: str, version: str) -> TaskKind:
    """The task kind the challenger was trained as (its scores are on that kind's decision metric)."""
    from prefix_registry.registry.store import PrefixRegistry

    return PrefixRegistry().version(task_name, version).kind


def champion_version(task_name: str) -> str:
    from prefix_registry.registry.store import PrefixRegistry

    return PrefixRegistry().resolve(task_name).version


@task(name="link-monitoring-run", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def link_monitoring_run(monitoring_run_id: str, retrain: str, facts: dict[str, str]) -> None:
    """Tag the monitoring run that fired this retrain with this run (and, once known, what it decided)."""
    from prefix_registry.monitoring.drift_runs import link_retrain
    from prefix_registry.registry.store import PrefixRegistry

    link_retrain(PrefixRegistry(), monitoring_run_id, retrain, **facts)


def retrain_lock_name(task_name: str) -> str:
    return f"prefix-retrain-{task_name}"


@task(name="ensure-retrain-lock", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def ensure_retrain_lock(task_name: str) -> str:
    """A global concurrency limit of 1 per task, so retrain flow runs of one task queue instead of being turned away
    by the claim (`healing.retraining.claim_retrain`) that keeps any two retrains of a task apart, CLI included."""
    from prefect.client.orchestration import get_client

    name = retrain_lock_name(task_name)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except Exception:
            client.upsert_global_concurrency_limit_by_name(name, limit=1)
    return name


@flow(name="retrain-prefix", flow_run_name=retrain_run_name, log_prints=True, persist_result=True)
def retrain_prefix_flow(
    task: str,
    trigger: str = "manual",
    drift_event_id: str | None = None,
    policy: dict[str, Any] | None = None,
    monitoring_run_id: str | None = None,
) -> Any:
    """Train a challenger for `task` and promote it only when it beats the champion on fresh held-out data.

    Args:
        trigger: "drift" (the automation) or "manual".
        drift_event_id: the `prefix.drift.detected` event that started the run, for the record.
        policy: `RetrainPolicy` fields to override; an unknown key fails the run with the list of known ones.
        monitoring_run_id: the monitoring run that found the drift (from the event); its drift episode sets where
            fresh data starts.
    Returns:
        `RetrainDecision.summary()` with `skipped: False`, or `{task, skipped: True, reason, promoted: False}` when
        the retrain did not start (cooldown, another retrain running, too few fresh labels): a plain Completed state
        whose message says why, the run tagged `skipped` (a custom state name would hide it from the default filter
        of Prefect's run lists). A failed retrain leaves the champion serving.
    """
    from prefect.runtime import flow_run

    logger = get_run_logger()
    retrain_policy = RetrainPolicy.from_values(policy)
    cause = RetrainTrigger.parse(trigger)
    champion = champion_version(task)
    name = retrain_name(task, champion, cause)
    label_flow_run(name, tags=[f"task:{task}", f"trigger:{cause}", f"champion:v{champion}"])
    this_run = f"{name} (Prefect flow run {flow_run.id})" if flow_run.id else name
    drift = drift_episode(task, monitoring_run_id) if cause is RetrainTrigger.DRIFT else None
    if drift is not None:
        logger.info(
            "triggered by drift in %s (event %s, monitoring run %s, episode of %d window(s) since %s)",
            ", ".join(drift.verdict.drifted_signals),
            drift_event_id,
            drift.run_id,
            drift.windows,
            drift.started_at,
        )
        link_monitoring_run(drift.run_id, this_run, {})
    lock = ensure_retrain_lock(task)
    # A second retrain flow run of the same task waits here, then meets the first one's cooldown (a `prefixctl
    # retrain` running meanwhile holds the orchestrator's claim and turns it away instead).
    # The lease is renewed while this run lives; if it dies, the slot frees itself within minutes.
    with concurrency(lock, occupy=1, strict=True):
        outcome = train_and_judge(task, retrain_policy, cause, drift)
    monitoring_link = _monitoring_run_url(task, drift)
    if isinstance(outcome, SkippedRetrain):
        return _skipped(outcome, cause, drift, this_run, name, monitoring_link)
    decision = outcome
    challenger = str(decision.challenger_version)
    verdict = decision.outcome.slug
    final_name = retrain_name(task, champion, cause, challenger)
    label_flow_run(final_name, tags=[f"challenger:v{challenger}", f"decision:{verdict}"])
    logger.info("%s: %s (%s)", task, decision.verdict, decision.reason)
    retrain_artifacts.publish(
        retrain_artifacts.decision_markdown(decision, _ui_url(), monitoring_link, _challenger_kind(task, challenger)),
        task,
        f"retrain {task}: v{challenger} {verdict} against v{champion}",
    )
    if drift is not None:
        facts = {"challenger_version": challenger, "decision": verdict}
        link_monitoring_run(drift.run_id, this_run.replace(name, final_name, 1), facts)
    return {**decision.summary(), "skipped": False}


def _skipped(
    skipped: SkippedRetrain,
    trigger: RetrainTrigger,
    drift: DriftEpisode | None,
    this_run: str,
    name: str,
    monitoring_link: str | None,
) -> State:
    """A Completed state with the reason as its message and as a markdown artifact; the run tagged `skipped`.

    Not a state named "Skipped": Prefect's run lists filter on its built-in state names by default, and would hide it.
    """
    get_run_logger().info("retrain of %s skipped (%s): %s", skipped.task, skipped.cause, skipped.reason)
    label_flow_run(f"{name}: skipped", tags=[SKIPPED_TAG, f"decision:{RetrainOutcome.SKIPPED.slug}"])
    retrain_artifacts.publish(
        retrain_artifacts.skip_markdown(skipped.task, skipped.reason, trigger, monitoring_link),
        skipped.task,
        f"retrain {skipped.task}: skipped",
    )
    if drift is not None:
        skipped_run = this_run.replace(name, f"{name}: skipped", 1)
        link_monitoring_run(drift.run_id, skipped_run, {"decision": RetrainOutcome.SKIPPED.slug})
    summary = {"task": skipped.task, "skipped": True, "reason": skipped.reason, "promoted": False}
    return Completed(message=f"retrain skipped, nothing trained: {skipped.reason}", data=summary)


def _ui_url() -> str:
    """The MLflow UI address links point to: PREFIX_REGISTRY_MLFLOW_UI_URL, else the tracking server's address."""
    from prefix_registry.settings import Settings

    return Settings().resolved_mlflow_ui_url


def _monitoring_run_url(task_name: str, drift: DriftEpisode | None) -> str | None:
    if drift is None:
        return None
    from prefix_registry.registry.store import PrefixRegistry

    experiment_id = PrefixRegistry().run(drift.run_id).info.experiment_id  # the task's monitoring experiment
    return retrain_artifacts.run_url(_ui_url(), experiment_id, drift.run_id)
