"""Specification of pushed alias moves: servers register themselves, every alias move is pushed to them signed, and
a server that misses a push still converges by polling. Two servers on real loopback ports share one registry and
one prediction log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from prefix_registry.alerts import alerting_registry
from prefix_registry.alerts.server_directory import RegisteredServer, ServerDirectory, directory_database_url
from prefix_registry.alerts.server_push import PUSH_PATH, AliasPush, signed_headers
from prefix_registry.alerts.signing import mlflow_signature, verify_mlflow_signature
from prefix_registry.flows.loopback import ThreadedUvicorn
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.serving.factory import build_serving_app
from prefix_registry.serving.presence import ServerPresence
from prefix_registry.serving.push_receiver import MLFLOW_WEBHOOK_PATH
from prefix_registry.settings import Settings
from prefix_registry.traffic.prediction_log import PredictionLog
from tests.conftest import tiny_config, tiny_data
from tests.servers.postgres_server import PostgresServer, running_postgres

TASK = "pushed"
TEXTS = ["A warm, funny and wise film.", "Tedious and far too long."]


@pytest.fixture(scope="module")
def registry(module_home: Path) -> PrefixRegistry:
    """Task `pushed`: v1 (champion) and v2, trained once for the module; moves alert and push (alerting_registry)."""
    registry = alerting_registry(Settings())
    data = tiny_data()
    train_and_register(registry, TASK, data, tiny_config(), promote=True, progress=False)
    train_and_register(registry, TASK, data, tiny_config(seed=7), progress=False)
    return registry


@pytest.fixture
def champion_v1(registry: PrefixRegistry) -> PrefixRegistry:
    registry.promote(TASK, "1", reason="each test starts from v1")
    return registry


@pytest.fixture(scope="module")
def directory(module_home: Path) -> Iterator[ServerDirectory]:
    directory = ServerDirectory.from_settings(Settings())
    yield directory
    directory.close()


def _pusher(registry: PrefixRegistry) -> AliasPush:
    return next(observer for observer in registry.alias_observers if isinstance(observer, AliasPush))


ANSWERED: dict[str, str] = {}  # prediction id -> version, of every prediction the servers answered


def _serving_version(url: str) -> str:
    response = httpx.post(f"{url}/v1/predict", json={"task": TASK, "texts": TEXTS}, trust_env=False, timeout=30)
    assert response.status_code == 200, response.text
    ANSWERED.update({p["prediction_id"]: p["version"] for p in response.json()["predictions"]})
    versions = {p["version"] for p in response.json()["predictions"]}
    assert len(versions) == 1
    return versions.pop()


def _seconds_until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.perf_counter()
    while not condition():
        assert time.perf_counter() - started < timeout, f"not within {timeout} s"
        time.sleep(0.01)
    return time.perf_counter() - started


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", trust_env=False).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


class RunningServer:
    """One server as `prefixctl serve` runs it: the app on a real port, registered in the directory once it
    listens; `watch_interval` None: it follows pushes only."""

    def __init__(
        self,
        registry: PrefixRegistry,
        directory: ServerDirectory,
        log: PredictionLog,
        secret: str | None,
        watch_interval: float | None = None,
    ) -> None:
        app = build_serving_app(registry, prediction_log=log, watch_interval=watch_interval, push_secret=secret)
        self.app = app
        self.http = ThreadedUvicorn(app)
        self.presence = ServerPresence(directory, self.http.url, None, "champion", heartbeat_s=5)

    @property
    def url(self) -> str:
        return self.http.url

    def __enter__(self) -> RunningServer:
        self.http.start()
        self.presence.start(ready=lambda: self.http.server.started)
        _seconds_until(lambda: self.presence.registered, 10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.presence.stop()
        self.http.stop()


# -- signatures ------------------------------------------------------------------------------------------------------
def test_mlflow_signatures_made_by_mlflow_itself_verify_and_altered_ones_do_not() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature  # MLflow's own signer, the one its server uses

    payload = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-12-07T20:00:00+00:00",
            "data": {"name": TASK, "alias": "champion", "version": "2"},
        }
    )
    delivery, now = str(uuid.uuid4()), 1_800_000_000
    header = _generate_hmac_signature("s3cret", delivery, str(now), payload)
    body = payload.encode()
    # A vector computed here from MLflow's documented scheme: v1,base64(HMAC-SHA256(secret, id.timestamp.payload)).
    digest = hmac.new(b"s3cret", f"{delivery}.{now}.{payload}".encode(), hashlib.sha256).digest()
    assert header == mlflow_signature("s3cret", delivery, str(now), body) == "v1," + base64.b64encode(digest).decode()
    assert verify_mlflow_signature("s3cret", delivery, str(now), body, header, now=now + 59)
    assert not verify_mlflow_signature("other", delivery, str(now), body, header, now=now)
    assert not verify_mlflow_signature("s3cret", str(uuid.uuid4()), str(now), body, header, now=now)
    assert not verify_mlflow_signature("s3cret", delivery, str(now), body + b" ", header, now=now)
    assert not verify_mlflow_signature("s3cret", delivery, str(now), body, header, now=now + 301)  # a replay
    assert not verify_mlflow_signature("s3cret", delivery, str(now), body, None, now=now)


# -- the server directory --------------------------------------------------------------------------------------------
def test_servers_register_beat_and_a_silent_one_is_ignored_then_pruned(tmp_path: Path) -> None:
    lock_url = f"sqlite:///{tmp_path / 'locks.db'}"
    assert directory_database_url(lock_url) == f"sqlite:///{tmp_path / 'locks-servers.db'}"
    directory = ServerDirectory(lock_url, stale_after_s=30)
    try:
        now = 1_800_000_000.0
        directory.register(RegisteredServer("a", "http://127.0.0.1:8001/", None, "champion", now, now))
        directory.register(RegisteredServer("b", "http://127.0.0.1:8002", ("other",), "champion", now, now))
        assert [(s.server_id, s.url, s.tasks) for s in directory.live(now=now + 29)] == [
            ("a", "http://127.0.0.1:8001", None),
            ("b", "http://127.0.0.1:8002", ("other",)),
        ]
        assert [s.follows(TASK) for s in directory.live(now=now)] == [True, False]
        assert directory.heartbeat("a", now=now + 20) is True
        assert [s.server_id for s in directory.live(now=now + 45)] == ["a"]  # b missed its heartbeats
        assert directory.prune(now=now + 45) == 1
        assert directory.heartbeat("b", now=now + 46) is False  # pruned: it must register again
        directory.deregister("a")
        assert directory.live(now=now + 46) == []
        secret = directory.secret()
        assert len(secret) == 64 and ServerDirectory(lock_url).secret() == secret  # generated once, shared
        assert ServerDirectory(lock_url, configured_secret="configured").secret() == "configured"
        assert (tmp_path / "locks-servers.db").stat().st_mode & 0o077 == 0  # it holds the secret
    finally:
        directory.close()


# -- the receiver ----------------------------------------------------------------------------------------------------
def test_the_receiver_refuses_unsigned_wrongly_signed_stale_and_unconfigured_pushes(
    champion_v1: PrefixRegistry, tmp_path: Path
) -> None:
    body = json.dumps({"task": TASK, "alias": "champion"}).encode()
    app = build_serving_app(champion_v1, watch_interval=None, push_secret="right")
    with TestClient(app) as client:
        assert client.post(PUSH_PATH, content=body).status_code == 401
        assert client.post(PUSH_PATH, content=body, headers=signed_headers("wrong", body)).status_code == 401
        stale = signed_headers("right", body, now=time.time() - 120)
        assert client.post(PUSH_PATH, content=body, headers=stale).status_code == 401
        garbage = b'{"task": "../etc"}'
        assert client.post(PUSH_PATH, content=garbage, headers=signed_headers("right", garbage)).status_code == 422
        answer = client.post(PUSH_PATH, content=body, headers=signed_headers("right", body))
        assert answer.status_code == 200 and answer.json() == {"task": TASK, "swaps": [], "followed": True}
        metrics = client.get("/metrics").text
        assert 'prefix_push_rejected_total{reason="bad_signature",source="prefix-registry"} 3.0' in metrics
        assert 'prefix_push_rejected_total{reason="malformed",source="prefix-registry"} 1.0' in metrics
        assert 'prefix_pushes_received_total{source="prefix-registry"} 1.0' in metrics
        paths = set(client.get("/openapi.json").json()["paths"])
        assert PUSH_PATH not in paths and MLFLOW_WEBHOOK_PATH not in paths  # not part of the client API

    unconfigured = build_serving_app(champion_v1, watch_interval=None)
    with TestClient(unconfigured) as client:
        answer = client.post(PUSH_PATH, content=body, headers=signed_headers("right", body))
        assert answer.status_code == 503 and "not enabled" in answer.json()["error"]


def test_an_mlflow_alias_webhook_signed_as_mlflow_signs_swaps_the_version(champion_v1: PrefixRegistry) -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    app = build_serving_app(champion_v1, watch_interval=None, push_secret="shared")

    def delivery(payload: dict[str, Any], secret: str = "shared") -> dict[str, str]:
        text, delivery_id, stamp = json.dumps(payload), str(uuid.uuid4()), str(int(time.time()))
        signature = _generate_hmac_signature(secret, delivery_id, stamp, text)
        headers = {"X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": stamp, "X-MLflow-Signature": signature}
        return {"content": text, "headers": headers}  # type: ignore[dict-item]

    moved = {"entity": "model_version_alias", "action": "created", "data": {"name": TASK, "alias": "champion"}}
    with TestClient(app) as client:
        assert client.post(MLFLOW_WEBHOOK_PATH, **delivery(moved, secret="other")).status_code == 401  # type: ignore[arg-type]
        champion_v1.gateway.set_alias(TASK, "champion", "2")  # an MLflow client moved it
        answer = client.post(MLFLOW_WEBHOOK_PATH, **delivery(moved))  # type: ignore[arg-type]
        assert answer.status_code == 200, answer.text
        assert answer.json()["swaps"] == [{"from": "1", "to": "2"}]
        assert client.post("/v1/predict", json={"task": TASK, "texts": TEXTS}).json()["version"] == "2"
        other = {"entity": "model_version", "action": "created", "data": {"name": TASK}}
        assert client.post(MLFLOW_WEBHOOK_PATH, **delivery(other)).json()["followed"] is False  # type: ignore[arg-type]
        metrics = client.get("/metrics").text
        assert 'prefix_push_swaps_total{source="mlflow"} 1.0' in metrics
        assert 'prefix_push_rejected_total{reason="bad_signature",source="mlflow"} 1.0' in metrics


# -- two servers -----------------------------------------------------------------------------------------------------
def test_two_servers_answer_with_the_promoted_version_right_after_promote_returns(
    champion_v1: PrefixRegistry, directory: ServerDirectory, tmp_path: Path
) -> None:
    secret = directory.secret()
    ANSWERED.clear()
    with ExitStack() as stack:
        logs = [stack.enter_context(PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")) for _ in range(2)]
        servers = [stack.enter_context(RunningServer(champion_v1, directory, log, secret)) for log in logs]
        assert {s.url for s in directory.live()} >= {s.url for s in servers}
        assert [_serving_version(s.url) for s in servers] == ["1", "1"]

        champion_v1.promote(TASK, "2", reason="pushed to both servers")
        # Measured from promote's return, the later of the two servers (they poll never: watch_interval None).
        later = max(_seconds_until(lambda url=s.url: _serving_version(url) == "2", 2.0) for s in servers)
        assert later < 2.0
        results = _pusher(champion_v1).results
        assert sorted((r.url, r.status) for r in results if r.url in {s.url for s in servers}) == sorted(
            (s.url, 200) for s in servers
        )

        champion_v1.rollback(TASK, reason="rolled back on both servers")
        assert max(_seconds_until(lambda url=s.url: _serving_version(url) == "1", 2.0) for s in servers) < 2.0
        for server in servers:
            assert _metric(server.url, "prefix_pushes_received_total") == 2
            assert _metric(server.url, "prefix_push_swaps_total") == 2

        # A challenger move is pushed too (the server re-reads; its champion stays).
        champion_v1.promote(TASK, "2", alias="challenger", reason="a challenger")
        assert [_metric(s.url, "prefix_pushes_received_total") for s in servers] == [3, 3]
        assert [_serving_version(s.url) for s in servers] == ["1", "1"]
    assert {s.url for s in directory.live()} & {s.url for s in servers} == set()  # deregistered on a clean stop
    with PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}") as log:
        stored = log.window(TASK)
    # One log holds both servers' rows, each with the version that answered it.
    assert dict(zip(stored["prediction_id"], stored["version"], strict=True)) == ANSWERED
    assert set(ANSWERED.values()) == {"1", "2"}


def test_a_server_that_misses_the_push_converges_at_its_next_poll(
    champion_v1: PrefixRegistry, directory: ServerDirectory, tmp_path: Path
) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")  # closed by the server's shutdown
    # Its secret differs from the directory's: every push to it is refused (401), as a lost push would be.
    with RunningServer(champion_v1, directory, log, "not-the-shared-secret", watch_interval=0.5) as server:
        assert _serving_version(server.url) == "1"
        champion_v1.promote(TASK, "2", reason="push refused, poll catches up")
        refused = [r for r in _pusher(champion_v1).results if r.url == server.url]
        assert [r.status for r in refused] == [401]
        assert _seconds_until(lambda: _serving_version(server.url) == "2", 5.0) < 5.0
        assert _metric(server.url, "prefix_push_rejected_total") == 1
        assert _metric(server.url, "prefix_push_swaps_total") == 0  # the poll swapped, not the push


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    yield from running_postgres()


@pytest.mark.integration
def test_two_servers_on_postgresql_follow_a_push_and_share_one_prediction_log(
    champion_v1: PrefixRegistry, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = postgres.create_database("pushed_servers")
    # One PostgreSQL database holds the prediction log, the alias lock and history, and the server directory.
    monkeypatch.setenv("PREFIX_REGISTRY_PREDICTION_LOG_URL", shared)
    registry = alerting_registry(Settings())
    directory = ServerDirectory.from_settings(Settings())
    assert directory.url.startswith("postgresql")
    ANSWERED.clear()
    try:
        with ExitStack() as stack:
            logs = [stack.enter_context(PredictionLog(shared)) for _ in range(2)]
            servers = [stack.enter_context(RunningServer(registry, directory, log, directory.secret())) for log in logs]
            assert sorted(s.url for s in directory.live()) == sorted(s.url for s in servers)
            assert [_serving_version(s.url) for s in servers] == ["1", "1"]
            registry.promote(TASK, "2", reason="pushed through PostgreSQL's directory")
            assert max(_seconds_until(lambda url=s.url: _serving_version(url) == "2", 2.0) for s in servers) < 2.0
            assert sorted(r.status for r in _pusher(registry).results) == [200, 200]
        assert directory.live() == []
    finally:
        directory.close()
    with PredictionLog(shared) as log:
        stored = log.window(TASK)
    assert dict(zip(stored["prediction_id"], stored["version"], strict=True)) == ANSWERED
    assert set(ANSWERED.values()) == {"1", "2"}


def test_a_rollout_start_and_stop_are_pushed_to_a_server_that_never_polls(
    champion_v1: PrefixRegistry, directory: ServerDirectory, tmp_path: Path
) -> None:
    from prefix_registry.healing.rollout_actions import start_rollout, stop_rollout
    from prefix_registry.registry.rollouts import RolloutMode

    def rollout(url: str) -> dict[str, Any] | None:
        tasks = httpx.get(f"{url}/v1/tasks", trust_env=False).json()["tasks"]
        return next(t["rollout"] for t in tasks if t["task"] == TASK)

    with (
        PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}") as log,
        RunningServer(champion_v1, directory, log, directory.secret()) as server,
    ):
        assert rollout(server.url) is None
        start_rollout(champion_v1, TASK, "2", RolloutMode.CANARY, 30.0)
        assert _seconds_until(lambda: rollout(server.url) is not None, 2.0) < 2.0
        assert rollout(server.url)["challenger_version"] == "2"  # type: ignore[index]
        stop_rollout(champion_v1, TASK)
        assert _seconds_until(lambda: rollout(server.url) is None, 2.0) < 2.0
        assert _metric(server.url, "prefix_pushes_received_total") == 2


def test_two_servers_on_one_log_get_a_canary_started_by_the_cli_by_push_and_agree_on_each_keys_arm(
    champion_v1: PrefixRegistry, directory: ServerDirectory, tmp_path: Path, cli: Any
) -> None:
    from prefix_registry.healing.rollout_actions import stop_rollout
    from prefix_registry.serving.routing import takes_challenger

    def arm(url: str, key: str) -> str:
        body = {"task": TASK, "texts": TEXTS[:1], "routing_key": key}
        response = httpx.post(f"{url}/v1/predict", json=body, trust_env=False, timeout=30)
        assert response.status_code == 200, response.text
        return str(response.json()["predictions"][0]["version"])

    def rollout(url: str) -> dict[str, Any] | None:
        tasks = httpx.get(f"{url}/v1/tasks", trust_env=False).json()["tasks"]
        return next(t["rollout"] for t in tasks if t["task"] == TASK)

    keys = [f"user-{i}" for i in range(40)]
    shared = f"sqlite:///{tmp_path / 'predictions.db'}"  # one prediction log for both servers
    try:
        with ExitStack() as stack:
            logs = [stack.enter_context(PredictionLog(shared)) for _ in range(2)]
            # Neither server polls: the rollout reaches them by push only.
            servers = [
                stack.enter_context(RunningServer(champion_v1, directory, log, directory.secret())) for log in logs
            ]
            started = cli("rollout", "start", TASK, "2", "--canary", "30", "--json")
            assert started.exit_code == 0, started.stderr
            assert max(_seconds_until(lambda url=s.url: rollout(url) is not None, 2.0) for s in servers) < 2.0
            arms = [{key: arm(s.url, key) for key in keys} for s in servers]
        with PredictionLog(shared) as log:
            stored = log.window(TASK)
    finally:
        if champion_v1.rollouts.current(TASK) is not None:
            stop_rollout(champion_v1, TASK, "test cleanup")
    expected = {key: "2" if takes_challenger(TASK, "2", key, 30.0) else "1" for key in keys}
    assert arms[0] == arms[1] == expected  # the same key, the same arm, on either server
    assert set(expected.values()) == {"1", "2"}
    assert sorted(stored["version"]) == sorted([*expected.values(), *expected.values()])  # both servers' rows
