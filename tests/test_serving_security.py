"""Specification of the server under hostile clients: keys and scopes, poisoned feedback, hostile strings, big bodies.

Each test is one row of issue 11's table ("measured on main"): it failed on that code and passes now.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from prefix_registry.healing.label_sources import UNKEYED, cap_per_source, trusted_fresh_labels
from prefix_registry.healing.retrain_policy import RetrainPolicy
from prefix_registry.healing.retraining import RetrainSkipped, retrain
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.serving.app import ServingLimits
from prefix_registry.serving.factory import build_serving_app
from prefix_registry.settings import Settings
from prefix_registry.traffic.api_keys import ApiKeyStore
from prefix_registry.traffic.prediction_log import PredictionLog
from tests.conftest import tiny_config, tiny_data

FLIP = {"positive": "negative", "negative": "positive"}


@pytest.fixture(scope="module")
def registry(module_home: Path) -> PrefixRegistry:
    registry = PrefixRegistry(Settings())
    train_and_register(registry, "sentiment", tiny_data(), tiny_config(), promote=True, progress=False)
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


def _client(registry: PrefixRegistry, log: PredictionLog, keys: ApiKeyStore | None, **limits) -> TestClient:
    app = build_serving_app(
        registry, prediction_log=log, api_keys=keys, limits=ServingLimits(**limits), watch_interval=None
    )
    app.state.keys.cache_seconds = 0.0  # see key changes at once
    return TestClient(app)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_once_a_key_exists_anonymous_and_unknown_callers_get_401(registry, log, keys) -> None:
    with _client(registry, log, keys) as client:
        assert client.post("/v1/predict", json={"task": "sentiment", "texts": ["fine"]}).status_code == 200
        admin = keys.create("ops", ["admin"]).key
        for headers in ({}, _bearer("pfx_not-a-key"), {"Authorization": "Basic abc"}):
            response = client.post("/v1/predict", json={"task": "sentiment", "texts": ["fine"]}, headers=headers)
            assert response.status_code == 401, response.text
        assert client.get("/metrics").status_code == 401
        assert client.get("/v1/tasks").status_code == 401
        assert client.get("/healthz").status_code == 200  # liveness probes carry no key
        assert client.get("/v1/tasks", headers=_bearer(admin)).status_code == 200


def test_scopes_and_tasks_of_a_key_are_enforced_and_revocation_is_immediate(registry, log, keys) -> None:
    predictor = keys.create("app", ["predict"], ("sentiment",)).key
    other_task = keys.create("other", ["predict", "feedback"], ("reviews",)).key
    with _client(registry, log, keys) as client:
        answer = client.post("/v1/predict", json={"task": "sentiment", "texts": ["fine"]}, headers=_bearer(predictor))
        assert answer.status_code == 200
        prediction_id = answer.json()["predictions"][0]["prediction_id"]
        label = client.post(
            "/v1/feedback", json={"prediction_id": prediction_id, "label": "positive"}, headers=_bearer(predictor)
        )
        assert label.status_code == 403 and "lacks scope 'feedback'" in label.json()["error"]
        wrong_task = client.post(
            "/v1/predict", json={"task": "sentiment", "texts": ["fine"]}, headers=_bearer(other_task)
        )
        assert wrong_task.status_code == 403 and "may not act on task 'sentiment'" in wrong_task.json()["error"]
        keys.revoke("app")
        again = client.post("/v1/predict", json={"task": "sentiment", "texts": ["fine"]}, headers=_bearer(predictor))
        assert again.status_code == 401
    assert log.get(prediction_id).key_name == "app"  # the key's name is logged, never its secret


def test_a_prediction_takes_one_label_and_a_correction_is_recorded(registry, log, keys) -> None:
    labeller = keys.create("labeller", ["predict", "feedback"]).key
    with _client(registry, log, keys) as client:
        answer = client.post(
            "/v1/predict",
            json={"task": "sentiment", "texts": ["fine"]},
            headers={**_bearer(labeller), "X-Request-Id": "<script>\n", "X-Prediction-Source": "admin-console"},
        )
        prediction_id = answer.json()["predictions"][0]["prediction_id"]

        def send(label: str, correction: bool = False) -> int:
            body = {"prediction_id": prediction_id, "label": label, "correction": correction}
            return client.post("/v1/feedback", json=body, headers=_bearer(labeller)).status_code

        assert [send("positive"), send("positive"), send("negative"), send("negative", correction=True)] == [
            200,
            200,
            409,
            200,
        ]
    record = log.get(prediction_id)
    assert (record.feedback_label, record.feedback_key) == ("negative", "labeller")
    assert [(e["label"], e["previous_label"]) for e in log.feedback_trail(prediction_id)] == [
        ("positive", None),
        ("negative", "positive"),
    ]
    assert record.source == "http" and record.request_id != "<script>\n" and len(record.request_id) == 32


def test_feedback_is_rate_limited_per_key(registry, log, keys) -> None:
    flooder = keys.create("flooder", ["predict", "feedback"]).key
    with _client(registry, log, keys, feedback_per_minute=60, feedback_burst=5) as client:
        answer = client.post("/v1/predict", json={"task": "sentiment", "texts": ["a"] * 8}, headers=_bearer(flooder))
        ids = [p["prediction_id"] for p in answer.json()["predictions"]]
        codes = [
            client.post("/v1/feedback", json={"prediction_id": i, "label": "positive"}, headers=_bearer(flooder))
            for i in ids
        ]
    assert [c.status_code for c in codes] == [200] * 5 + [429] * 3
    assert "Retry-After" in codes[-1].headers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/predict", b'{"task": "sentiment", "texts": ["\\ud800"]}'),
        ("/v1/predict", b'{"task": "\\udfff", "texts": ["fine"]}'),
        ("/v1/feedback", b'{"prediction_id": "\\ud800", "label": "positive"}'),
        ("/v1/feedback", b'{"prediction_id": "abc", "label": "\\ud83d"}'),
    ],
)
def test_lone_surrogates_get_a_4xx_never_a_500(registry, log, path: str, body: bytes) -> None:
    with _client(registry, log, None) as client:
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert "lone surrogate" in error or "unable to parse raw data as a unicode string" in error


def test_chunked_bodies_above_the_limit_get_413(registry, log) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"task": "sentiment", "texts": ["'
        for _ in range(total // 65536):
            yield b"x" * 65536
        yield b'"]}'

    with _client(registry, log, None, max_body_bytes=1_000_000) as client:
        response = client.post("/v1/predict", content=chunks(5_000_000), headers={"content-type": "application/json"})
        assert response.status_code == 413 and "exceeds 1000000 bytes" in response.json()["error"]
        small = client.post("/v1/predict", content=chunks(0), headers={"content-type": "application/json"})
        assert small.status_code == 422  # read in full and parsed: an empty text, not a size problem


def test_junk_paths_and_task_names_do_not_grow_the_metrics(registry, log) -> None:
    with _client(registry, log, None) as client:
        client.post("/v1/predict", json={"task": "sentiment", "texts": ["fine"]})
        before = len(client.get("/metrics").text)
        for i in range(300):
            client.get(f"/junk/{i}/{'a' * 50}")
            client.post("/v1/predict", json={"task": f"no-such-task-{i}", "texts": ["x"]})
        after = len(client.get("/metrics").text)
    assert after - before < 3000, f"/metrics grew from {before} to {after} bytes"


def test_invalid_task_names_never_reach_the_registry_nor_degrade_health(registry, log, monkeypatch) -> None:
    with _client(registry, log, None) as client:
        table = client.app.state.table

        def no_registry(*_args, **_kwargs):
            raise AssertionError("a request reached the registry")

        monkeypatch.setattr(table.registry, "aliases", no_registry)
        monkeypatch.setattr(table.registry, "version", no_registry)
        for task in ("../x", "nosuch", "x" * 64, "a\x00b"):
            response = client.post("/v1/predict", json={"task": task, "texts": ["x"]})
            assert response.status_code == 404, (task, response.text)
        assert client.get("/healthz").json()["status"] == "ok"
        assert [state.task for state in table.states()] == ["sentiment"]


def test_a_hung_registry_does_not_starve_healthz(registry, log) -> None:
    with _client(registry, log, None) as client:
        table = client.app.state.table
        table._lock.acquire()  # a refresh stuck on a registry that does not answer
        try:
            callers = [
                threading.Thread(
                    target=client.post, args=("/v1/predict",), kwargs={"json": {"task": f"t{i}", "texts": ["x"]}}
                )
                for i in range(60)
            ]
            for caller in callers:
                caller.start()
            started = time.perf_counter()
            health = client.get("/healthz")
            elapsed = time.perf_counter() - started
        finally:
            table._lock.release()
        for caller in callers:
            caller.join(timeout=30)
    assert health.status_code == 200 and elapsed < 2.0, f"/healthz took {elapsed:.1f}s"


def test_one_label_share_caps_each_key_and_trusts_unkeyed_writers() -> None:
    frame = pd.DataFrame({"source": ["mallory"] * 1000 + ["honest"] * 60 + [UNKEYED] * 40})
    kept = cap_per_source(frame, 0.25)["source"].value_counts().to_dict()
    assert kept == {"mallory": 20, "honest": 20, UNKEYED: 40}  # 20 <= 0.25 * (20 + 20 + 40)
    assert cap_per_source(frame[frame["source"] == "mallory"], 0.25).empty  # one key alone is never all the data


def test_one_key_flooding_flipped_labels_does_not_get_its_challenger_promoted(registry, log, keys) -> None:
    """600 flipped labels from one key, 60 true ones from another: the retrain does not use the flood."""
    honest = keys.create("honest", ["predict", "feedback"]).key
    mallory = keys.create("mallory", ["predict", "feedback"]).key
    frame = tiny_data(limit=700).frame.sample(frac=1.0, random_state=0)
    texts, truth = frame["text"].tolist(), frame["label"].tolist()
    champion = registry.aliases("sentiment")["champion"]
    with _client(registry, log, keys, feedback_per_minute=1e6, feedback_burst=10_000) as client:
        for key, start, stop, flip in ((honest, 0, 60, False), (mallory, 60, 660, True)):
            for begin in range(start, stop, 50):
                batch = texts[begin : min(stop, begin + 50)]
                answer = client.post("/v1/predict", json={"task": "sentiment", "texts": batch}, headers=_bearer(key))
                for prediction, label in zip(answer.json()["predictions"], truth[begin:], strict=False):
                    body = {"prediction_id": prediction["prediction_id"], "label": FLIP[label] if flip else label}
                    assert client.post("/v1/feedback", json=body, headers=_bearer(key)).status_code == 200
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFIX_REGISTRY_API_KEYS_URL", str(keys._engine.url))
        fresh, sources = trusted_fresh_labels(log, "sentiment", None, limit=5000)
        assert sources.counts.get("labels_from:mallory", 0) <= 0.25 * len(fresh)
        assert sources.counts["over_cap_left_out:mallory"] >= 550
        with pytest.raises(RetrainSkipped, match="over_cap_left_out:mallory"):
            retrain(
                registry,
                log,
                "sentiment",
                RetrainPolicy(cooldown_minutes=0),
                since=registry.version("sentiment", 1).created_at,
            )
        keys.revoke("mallory")
        fresh, sources = trusted_fresh_labels(log, "sentiment", None, limit=5000)
        assert sources.counts["revoked_left_out:mallory"] == 600 and "labels_from:mallory" not in sources.counts
    assert registry.aliases("sentiment")["champion"] == champion
