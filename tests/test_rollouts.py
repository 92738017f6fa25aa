"""Specification of rollouts: recorded beside the aliases, served as a shadow or a canary, judged on live labels.

One module registry: sentiment v1 (champion, trained on true labels) and v2 (trained on flipped labels, so its live
accuracy is far below the champion's).
"""

from __future__ import annotations

import dataclasses
import time
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
        "reason": "canary 30%: try v2",
    }
    entry = registry.alias_history(TASK)[-1]
    assert (entry.alias, entry.action, entry.to_version, entry.actor, entry.reason) == (
        "challenger",
        "rollout-start",
        "2",
        "tester",
        "canary 30%: try v2",
    )
    page = registry.require_task(TASK).description
    assert "Rollout now: **v2** (canary 30%: try v2), started " in page and "UTC by tester." in page
    assert registry.aliases(TASK)["challenger"] == "2"
    # Another process (a new registry) reads the same rollout from the database.
    reread = PrefixRegistry(Settings()).rollouts.current(TASK)
    assert reread is not None and (reread.mode, reread.share, reread.challenger_version) == (
        RolloutMode.CANARY,
        30,
        "2",
    )

    empty = cli("rollout", "status", TASK, "--json")
    assert empty.exit_code == 0, empty.stderr
    assert {arm: (v["requests"], v["labelled"], v["accuracy"]) for arm, v in empty.json()["arms"].items()} == {
        "champion": (0, 0, None),
        "challenger": (0, 0, None),
    }
    waiting = cli("rollout", "judge", TASK, "--json")
    assert waiting.json()["decision"] == "continue" and waiting.json()["acted"] is None

    again = cli("rollout", "start", TASK, "2", "--shadow")
    assert again.exit_code == 2 and "already has a canary rollout of v2" in again.stderr
    assert cli("rollout", "stop", TASK).exit_code == 0
    assert registry.rollouts.current(TASK) is None
    assert registry.alias_history(TASK)[-1].action == RolloutAction.STOP.value
    assert "Last rollout: v2 stopped by hand at " in registry.require_task(TASK).description

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
    registry: PrefixRegistry, fresh_log: PredictionLog, cli, no_rollout: None
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
    merged = shadow.merge(frame[frame["source"] == "http"], on=["request_id", "text"], suffixes=("", "_champion"))
    agreement = (merged["predicted_label"] == merged["predicted_label_champion"]).mean()
    status = cli("rollout", "status", TASK, "--json")
    assert status.exit_code == 0, status.stderr
    assert status.json()["compared"] == 12 and status.json()["agreement"] == pytest.approx(agreement)
    arms = status.json()["arms"]
    assert (arms["champion"]["requests"], arms["challenger"]["requests"]) == (4, 4)
    assert (arms["champion"]["predictions"], arms["challenger"]["predictions"]) == (12, 12)
    # A label of the champion's answer labels the shadow's score of the same text in the same request.
    with PredictionLog(Settings().resolved_prediction_log_url) as labels:  # the server closed its log on stopping
        for prediction in answers[0]["predictions"]:
            labels.attach_feedback(prediction["prediction_id"], "positive")
    labelled = cli("rollout", "status", TASK, "--json").json()["arms"]
    assert (labelled["champion"]["labelled"], labelled["challenger"]["labelled"]) == (3, 3)
    table = cli("rollout", "status", TASK)
    assert table.exit_code == 0 and f"agreement on the same texts: {agreement:.1%} of 12" in table.stdout


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
    print("\nlabels needed, worse challenger:", {m: labels_needed(fresh_log, "1", "2", m) for m in (10, 30, 50)})


def test_a_retrain_decision_under_a_canary_policy_starts_a_rollout_and_says_so(
    registry: PrefixRegistry, no_rollout: None
) -> None:
    from prefix_registry.healing.decision import RetrainDecision, RetrainOutcome, RetrainTrigger
    from prefix_registry.healing.decision_alert import retrain_decision_alert
    from prefix_registry.healing.orchestrator import act
    from prefix_registry.healing.retrain_policy import PromotionMode, RetrainPolicy
    from prefix_registry.healing.retraining import won_outcome
    from prefix_registry.healing.rollout_actions import stop_rollout
    from prefix_registry.registry.versions import TAG_RETRAIN_DECISION

    assert RetrainPolicy().promotion is PromotionMode.DIRECT  # `make demo` keeps its story
    assert won_outcome(RetrainPolicy()) is RetrainOutcome.PROMOTED
    policy = RetrainPolicy(promotion=PromotionMode.CANARY, rollout_share=20)
    outcome = won_outcome(policy)
    assert (outcome.value, outcome.slug) == ("rollout started", "rollout-started")  # the tag, the Prefect tag
    decision = RetrainDecision(
        task=TASK,
        champion_version="1",
        challenger_version="2",
        outcome=outcome,
        reason="challenger gains +0.050 macro-F1 on fresh held-out data",
        trigger=RetrainTrigger.MANUAL,
        decided_at="2026-12-07T12:00:00+00:00",
    )
    assert (decision.promoted, decision.won, decision.summary()["outcome"]) == (False, True, "rollout started")
    assert decision.verdict == "rollout of v2 started (champion v1 still serves)"
    alert = retrain_decision_alert(decision)
    assert (alert.severity, alert.details["outcome"]) == ("info", "rollout started")
    assert "promoted" not in alert.title and "a rollout starts" in alert.title
    with pytest.raises(ValueError, match="carried out by mode 'direct', got 'canary'"):
        act(registry, dataclasses.replace(decision, outcome=RetrainOutcome.PROMOTED), PromotionMode.CANARY)
    with pytest.raises(ValueError, match=r"carried out by mode \['shadow', 'canary'\], got 'direct'"):
        act(registry, decision, PromotionMode.DIRECT)
    assert registry.rollouts.current(TASK) is None

    before = registry.version(TASK, "2").tags.get(TAG_RETRAIN_DECISION)
    registry.set_version_tags(TASK, "2", {TAG_RETRAIN_DECISION: outcome.value})  # as judge_and_record tags it
    try:
        act(registry, decision, policy.promotion, policy.rollout_share)

        assert registry.aliases(TASK)["champion"] == "1"  # not promoted: rolled out
        rollout = registry.rollouts.current(TASK)
        assert rollout is not None and (rollout.mode, rollout.share, rollout.challenger_version) == (
            RolloutMode.CANARY,
            20.0,
            "2",
        )
        assert rollout.reason == "canary 20%: retrain (manual): challenger gains +0.050 macro-F1 on fresh held-out data"
        stop_rollout(registry, TASK, reason="test: done")
        assert registry.version(TASK, "2").tags[TAG_RETRAIN_DECISION] == "rollout rolled back"
    finally:
        if before is None:
            registry.gateway.delete_version_tag(TASK, "2", TAG_RETRAIN_DECISION)
        else:
            registry.set_version_tags(TASK, "2", {TAG_RETRAIN_DECISION: before})


def test_kill9_of_a_served_canary_loses_no_acknowledged_prediction_and_a_new_server_routes_the_same(
    registry: PrefixRegistry, fresh_log: PredictionLog, no_rollout: None, module_home: Path
) -> None:
    """A real `prefixctl serve` process under load with distinct routing keys, killed with SIGKILL mid-canary: every
    prediction it acknowledged (both arms) is in the log; a new process reads the running rollout and routes the
    same keys to the same arms."""
    import threading

    import httpx

    from tests.faults.scenarios import ServeProcess, home_env

    start_rollout(registry, TASK, "2", RolloutMode.CANARY, 50.0)
    acked: dict[str, tuple[str, str]] = {}  # prediction id -> (routing key, version)
    errors: list[str] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as session:
            for n in range(10_000):
                if stop.is_set():
                    return
                key = f"load-{worker}-{n}"
                try:
                    response = session.post("/v1/predict", json={"task": TASK, "texts": ["Fine."], "routing_key": key})
                except httpx.HTTPError:
                    return  # the server is gone: what was not answered was never acknowledged
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                answer = response.json()["predictions"][0]
                acked[answer["prediction_id"]] = (key, answer["version"])

    server = ServeProcess(home_env(module_home), poll_interval=30.0)
    try:
        server.wait_ready()
        threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(3)]
        for thread in threads:
            thread.start()
        while len(acked) < 60 and not errors:
            time.sleep(0.05)
        server.kill9()  # requests in flight
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        server.kill9()
    assert errors == []
    versions = [version for _, version in acked.values()]
    assert {v: versions.count(v) for v in ("1", "2")} == {
        v: sum(takes_challenger(TASK, "2", key, 50.0) == (v == "2") for key, _ in acked.values()) for v in ("1", "2")
    }
    assert min(versions.count("1"), versions.count("2")) > 0  # both arms answered
    stored = fresh_log.window(TASK)
    logged = dict(zip(stored["prediction_id"], stored["version"], strict=True))
    assert {pid: logged.get(pid) for pid in acked} == {pid: version for pid, (_, version) in acked.items()}
    print(f"\nkill -9 mid-canary: {len(acked)} acknowledged ({versions.count('2')} by the canary), {len(logged)} rows")

    restarted = ServeProcess(home_env(module_home), poll_interval=30.0)  # a new process after the crash
    try:
        restarted.wait_ready()
        sample = list(acked.values())[:20]
        again = [
            httpx.post(
                f"{restarted.url}/v1/predict",
                json={"task": TASK, "texts": ["Fine."], "routing_key": key},
                timeout=30,
                trust_env=False,
            ).json()["predictions"][0]["version"]
            for key, _ in sample
        ]
        assert again == [version for _, version in sample]
    finally:
        restarted.stop()


class Killed(BaseException):
    """The process 'dies' at a failpoint (as the fault suite's SIGKILL does, nothing after it runs)."""


def test_a_start_or_end_killed_after_its_history_entry_leaves_entry_and_rollout_together(
    registry: PrefixRegistry, monkeypatch: pytest.MonkeyPatch, no_rollout: None
) -> None:
    from prefix_registry.registry import alias_mover
    from prefix_registry.registry.failpoints import ALIAS_MOVE_AFTER_HISTORY

    def killed_at(name: str) -> None:
        if name == ALIAS_MOVE_AFTER_HISTORY:
            raise Killed(name)

    challenger_before = registry.aliases(TASK).get("challenger")
    with monkeypatch.context() as patch:
        patch.setattr(alias_mover, "failpoint", killed_at)
        with pytest.raises(Killed):
            start_rollout(registry, TASK, "2", RolloutMode.CANARY, 30.0, reason="test: killed")
    last = registry.alias_history(TASK)[-1]
    assert (last.alias, last.action, last.to_version) == ("challenger", "rollout-start", "2")
    running = registry.rollouts.current(TASK)  # the record was committed with the entry
    assert running is not None and (running.challenger_version, running.share) == ("2", 30.0)
    assert registry.aliases(TASK).get("challenger") == challenger_before  # only the alias move is missing

    with monkeypatch.context() as patch:
        patch.setattr(alias_mover, "failpoint", killed_at)
        with pytest.raises(Killed):
            stop_rollout(registry, TASK, reason="test: killed while stopping")
    last = registry.alias_history(TASK)[-1]
    assert (last.action, last.reason) == ("rollout-stop", "test: killed while stopping")
    assert registry.rollouts.current(TASK) is None  # ended with its entry

    start_rollout(registry, TASK, "2", RolloutMode.SHADOW, 100.0)  # the next move of the alias completes the last
    assert registry.aliases(TASK)["challenger"] == "2"
    assert [e.action for e in registry.alias_history(TASK)[-3:]] == ["rollout-start", "rollout-stop", "rollout-start"]


def labels_needed(log: PredictionLog, champion: str, challenger: str, min_labels: int) -> int | None:
    """Total feedback labels (in the order they came) after which the judge first decided; None: never."""
    from prefix_registry.healing.rollout_judge import ArmStats, JudgePolicy, Verdict, judge

    frame = log.window(TASK, labelled_only=True).sort_values("feedback_at")
    right = {champion: 0, challenger: 0}
    seen = {champion: 0, challenger: 0}
    policy = JudgePolicy(min_labels=min_labels)
    for count, (version, predicted, truth) in enumerate(
        zip(frame["version"], frame["predicted_label"], frame["feedback_label"], strict=True), start=1
    ):
        seen[version] += 1
        right[version] += int(predicted == truth)
        arms = [ArmStats(v, 1000, 1000, 0, seen[v], right[v]) for v in (champion, challenger)]
        if judge(*arms, policy).verdict is not Verdict.CONTINUE:
            return count
    return None


def test_a_better_canary_is_promoted_by_the_scheduled_judge_flow(
    registry: PrefixRegistry, fresh_log: PredictionLog, no_rollout: None
) -> None:
    from prefix_registry.flows.judge_rollout import judge_rollout_flow

    # The flipped-label version is champion for this test; the canary is the one trained on true labels.
    registry.promote(TASK, "2", reason="test: a worse champion")
    try:
        start_rollout(registry, TASK, "1", RolloutMode.CANARY, 30.0)
        frame = tiny_data(limit=460).frame.iloc[160:460]
        with TestClient(serve(registry, fresh_log)) as client:
            for i, (text, label) in enumerate(zip(frame["text"], frame["label"], strict=True)):
                answer = predict(client, [text], f"user-{i}")
                fresh_log.attach_feedback(answer["predictions"][0]["prediction_id"], label)

        (summary,) = judge_rollout_flow.fn(tasks=[TASK], policy={"min_labels": 50})

        assert summary["decision"] == "promote", summary["reason"]
        assert summary["acted"]["action"] == "rollout-promote"
        assert registry.aliases(TASK)["champion"] == "1"
        assert registry.rollouts.current(TASK) is None
        moves = registry.alias_history(TASK)[-2:]
        assert [(m.alias, m.action, m.to_version, m.actor) for m in moves] == [
            ("champion", "promote", "1", "rollout-judge"),
            ("challenger", "rollout-promote", "1", "rollout-judge"),
        ]
        print("\nlabels needed, good challenger:", {m: labels_needed(fresh_log, "2", "1", m) for m in (10, 30, 50)})
    finally:
        if registry.aliases(TASK)["champion"] != "1":
            registry.promote(TASK, "1", reason="test cleanup")


def test_the_demo_canary_chapter_rolls_the_flipped_label_challenger_back_on_its_live_labels(
    registry: PrefixRegistry, fresh_log: PredictionLog, no_rollout: None
) -> None:
    """`prefixctl demo --rollout canary`'s chapter on this module's versions (no demo run: it takes minutes)."""
    from prefix_registry.flows.demo.canary import judged_canary
    from prefix_registry.flows.demo.summary import headline
    from prefix_registry.healing.rollout_judge import JudgePolicy

    frame = tiny_data(limit=460).frame.iloc[160:460]
    windows = iter([frame.iloc[0:100], frame.iloc[100:200], frame.iloc[200:300]])
    told: list[str] = []
    polling = build_serving_app(registry, prediction_log=fresh_log, watch_interval=0.2)  # as the demo's (1 s)
    with TestClient(polling) as client:
        result = judged_canary(
            registry, fresh_log, client, TASK, "2", windows, told.append, policy=JudgePolicy(min_labels=20)
        )
    assert (result["decision"], result["champion_after"]) == ("rollback", "1")
    assert result["live_accuracy"]["challenger"] < result["live_accuracy"]["champion"]
    assert registry.rollouts.current(TASK) is None
    assert told[0].startswith("canary: v2 answers 30% of requests") and "judge: rollback" in told[-1]
    facts = headline(
        {
            **{
                key: None
                for key in (
                    "champion_before",
                    "champion_after",
                    "drift_detected_in_window",
                    "live_accuracy",
                    "fresh_holdout",
                    "rollback",
                    "alerts_delivered",
                    "seconds",
                )
            },
            "canary": {"bad": result},
        }
    )
    assert facts["canary_bad"].startswith("v2: rollback after ")
    print("\ndemo canary chapter, bad challenger:", result["labels"], result["reason"])
