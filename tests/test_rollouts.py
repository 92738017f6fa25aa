"""Specification of rollouts: recorded beside the aliases, served as a shadow or a canary, judged on live labels.

One module registry: sentiment v1 (champion, trained on true labels) and v2 (trained on flipped labels, so its live
accuracy is far below the champion's).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from prefix_registry.healing.rollout_actions import start_rollout, stop_rollout
from prefix_registry.registry.rollouts import RolloutAction, RolloutMode
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.serving.factory import build_serving_app
from prefix_registry.serving.routing import takes_challenger
from prefix_registry.settings import Settings
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.training.data import LabelledTexts
from tests.conftest import tiny_config, tiny_data
from tests.servers.webhook_receiver import WebhookReceiver

TASK = "sentiment"


@pytest.fixture(scope="module")
def registry(module_home: Path) -> PrefixRegistry:
    registry = PrefixRegistry(Settings())
    data = tiny_data()
    train_and_register(registry, TASK, data, tiny_config(), promote=True, progress=False)
    flipped = data.frame.copy()
    flipped["label"] = flipped["label"].map({"positive": "negative", "negative": "positive"})
    train_and_register(registry, TASK, LabelledTexts(flipped, "rt-flipped"), tiny_config(), progress=False)
    return registry


@pytest.fixture
def fresh_log(registry: PrefixRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PredictionLog]:
    """A prediction log of this test only, which the CLI's commands read too."""
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    monkeypatch.setenv("PREFIX_REGISTRY_PREDICTION_LOG_URL", url)
    log = PredictionLog(url)
    yield log
    log.close()


@pytest.fixture
def no_rollout(registry: PrefixRegistry) -> Iterator[None]:
    yield
    if registry.rollouts.current(TASK) is not None:
        stop_rollout(registry, TASK, "test cleanup")


def serve(registry: PrefixRegistry, log: PredictionLog) -> FastAPI:
    return build_serving_app(registry, prediction_log=log, watch_interval=None)


def predict(client: TestClient, texts: list[str], routing_key: str | None = None) -> dict:
    body: dict = {"task": TASK, "texts": texts}
    if routing_key is not None:
        body["routing_key"] = routing_key
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_rollout_is_recorded_in_the_alias_history_and_refuses_bad_starts(
    registry: PrefixRegistry, cli, no_rollout: None
) -> None:
    started = cli("rollout", "start", TASK, "2", "--canary", "30", "--reason", "try v2", "--json")
    assert started.exit_code == 0, started.stderr
    assert started.json() == {
        "task": TASK,
        "action": "rollout-start",
        "mode": "canary",
        "share": 30.0,
        "challenger": "2",
        "champion": "1",
        "reason": "try v2",
    }
    entry = registry.alias_history(TASK)[-1]
    assert (entry.alias, entry.action, entry.to_version, entry.actor, entry.reason) == (
        "challenger",
        "rollout-start",
        "2",
        "tester",
        "try v2",
    )
    assert registry.aliases(TASK)["challenger"] == "2"
    # Another process (a new registry) reads the same rollout from the database.
    reread = PrefixRegistry(Settings()).rollouts.current(TASK)
    assert reread is not None and (reread.mode, reread.share, reread.challenger_version) == (
        RolloutMode.CANARY,
        30,
        "2",
    )

    again = cli("rollout", "start", TASK, "2", "--shadow")
    assert again.exit_code == 2 and "already has a canary rollout of v2" in again.stderr
    assert cli("rollout", "stop", TASK).exit_code == 0
    assert registry.rollouts.current(TASK) is None
    assert registry.alias_history(TASK)[-1].action == RolloutAction.STOP.value

    refusals = {
        ("--canary", "150"): "expected 0 to 100, got 150",
        ("--shadow", "--canary", "5"): "expected exactly one, got both",
        ("--sample", "5"): "expected exactly one, got neither",
    }
    for options, message in refusals.items():
        refused = cli("rollout", "start", TASK, "2", *options)
        assert refused.exit_code == 2 and message in refused.stderr, refused.stderr
    unknown = cli("rollout", "start", TASK, "99", "--canary", "10")
    assert unknown.exit_code == 2 and "99" in unknown.stderr
    champion = cli("rollout", "start", TASK, "1", "--canary", "10")
    assert champion.exit_code == 2 and "version 1 is the champion already" in champion.stderr
    nothing = cli("rollout", "judge", TASK)
    assert nothing.exit_code == 2 and "has no rollout running" in nothing.stderr


def test_a_shadow_never_answers_and_its_predictions_are_logged(
    registry: PrefixRegistry, fresh_log: PredictionLog, no_rollout: None
) -> None:
    start_rollout(registry, TASK, "2", RolloutMode.SHADOW, 100.0)
    texts = tiny_data(limit=40).frame["text"].tolist()[:12]
    with TestClient(serve(registry, fresh_log)) as client:
        answers = [predict(client, texts[i : i + 3], routing_key=f"user-{i}") for i in range(0, 12, 3)]
        assert client.get("/v1/tasks").json()["tasks"][0]["rollout"]["mode"] == "shadow"

    assert {answer["version"] for answer in answers} == {"1"}
    assert {p["version"] for answer in answers for p in answer["predictions"]} == {"1"}
    frame = fresh_log.window(TASK)
    counts = frame.groupby(["source", "version"]).size().to_dict()
    assert counts == {("http", "1"): 12, ("shadow", "2"): 12}
    shadow = frame[frame["source"] == "shadow"]
    answered = {p["prediction_id"] for answer in answers for p in answer["predictions"]}
    assert answered.isdisjoint(shadow["prediction_id"])  # a shadow's id is never handed out
    assert sorted(shadow["request_id"]) == sorted(frame[frame["source"] == "http"]["request_id"])
    assert shadow["latency_ms"].notna().all()


def test_a_canary_answers_by_routing_key_and_one_key_always_gets_the_same_arm(
    registry: PrefixRegistry, fresh_log: PredictionLog, no_rollout: None
) -> None:
    start_rollout(registry, TASK, "2", RolloutMode.CANARY, 30.0)
    with TestClient(serve(registry, fresh_log)) as client:
        served = {f"user-{i}": predict(client, ["A fine film."], f"user-{i}")["version"] for i in range(40)}
        repeats = {predict(client, ["Dull."], "user-6")["version"] for _ in range(5)}
        anonymous = predict(client, ["Dull."])["version"]

    expected = {key: "2" if takes_challenger(TASK, "2", key, 30.0) else "1" for key in served}
    assert served == expected
    assert "2" in served.values() and "1" in served.values()
    assert repeats == {expected["user-6"]}
    assert anonymous == ("2" if takes_challenger(TASK, "2", "anonymous", 30.0) else "1")
    frame = fresh_log.window(TASK)
    assert set(frame[frame["version"] == "2"]["source"]) == {"canary"}
    assert set(frame[frame["version"] == "1"]["source"]) == {"http"}


def test_a_rollout_survives_a_server_restart(
    registry: PrefixRegistry, fresh_log: PredictionLog, no_rollout: None
) -> None:
    start_rollout(registry, TASK, "2", RolloutMode.CANARY, 30.0)
    key = next(f"user-{i}" for i in range(100) if takes_challenger(TASK, "2", f"user-{i}", 30.0))
    with TestClient(serve(registry, fresh_log)) as client:
        assert predict(client, ["A fine film."], key)["version"] == "2"
    # A new process: a new registry object, log and server read the rollout from the database.
    restarted_log = PredictionLog(Settings().resolved_prediction_log_url)
    with TestClient(serve(PrefixRegistry(Settings()), restarted_log)) as client:
        rollout = client.get("/v1/tasks").json()["tasks"][0]["rollout"]
        assert (rollout["mode"], rollout["share"], rollout["challenger_version"]) == ("canary", 30.0, "2")
        assert predict(client, ["A fine film."], key)["version"] == "2"


def test_a_worse_canary_is_rolled_back_by_the_judge_with_a_history_entry_and_an_alert(
    registry: PrefixRegistry, fresh_log: PredictionLog, cli, monkeypatch: pytest.MonkeyPatch, no_rollout: None
) -> None:
    frame = tiny_data(limit=460).frame.iloc[160:460]
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("PREFIX_REGISTRY_ALERT_WEBHOOKS", receiver.url)
        assert cli("rollout", "start", TASK, "2", "--canary", "30").exit_code == 0
        with TestClient(serve(registry, fresh_log)) as client:
            for i, (text, label) in enumerate(zip(frame["text"], frame["label"], strict=True)):
                answer = predict(client, [text], f"user-{i}")
                fresh_log.attach_feedback(answer["predictions"][0]["prediction_id"], label)

        status = cli("rollout", "status", TASK, "--json")
        assert status.exit_code == 0, status.stderr
        arms = status.json()["arms"]
        assert arms["champion"]["labelled"] + arms["challenger"]["labelled"] == 300
        assert 0.25 * 300 <= arms["challenger"]["requests"] <= 0.35 * 300
        assert arms["challenger"]["accuracy"] < arms["champion"]["accuracy"] - 0.2

        judged = cli("rollout", "judge", TASK, "--min-labels", "50", "--json")
        assert judged.exit_code == 0, judged.stderr
        assert judged.json()["decision"] == "rollback"
        assert judged.json()["reason"].startswith("challenger worse: accuracy v2")
        assert receiver.wait_for(2)
        kinds = {request.json()["kind"]: request.json() for request in receiver.requests}

    assert set(kinds) == {"rollout_started", "rollout_rollback"}
    assert kinds["rollout_rollback"]["severity"] == "warning"
    entry = registry.alias_history(TASK)[-1]
    assert (entry.alias, entry.action, entry.actor) == ("challenger", "rollout-rollback", "rollout-judge")
    assert entry.reason == judged.json()["reason"]
    assert registry.rollouts.current(TASK) is None
    assert registry.aliases(TASK)["champion"] == "1"
