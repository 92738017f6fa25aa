"""Specification of the HTTP server: many tasks on one resident base, alias hot-swaps, logging, bad input."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from peft import PeftModel

from prefix_registry.registry.loading import fetch_verified_adapter
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.registry.versions import PrefixVersion
from prefix_registry.serving.app import ServingLimits
from prefix_registry.serving.factory import build_serving_app
from prefix_registry.settings import Settings
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.training.base_models import load_base_for_classification, resolve_base
from prefix_registry.training.data import LabelledTexts
from prefix_registry.training.evaluation import Predictions, predict_probabilities
from prefix_registry.training.pooling import install_pooling, stored_pooling
from tests.conftest import tiny_config, tiny_data

TEXTS = [
    "A warm, funny and wise film.",
    "Tedious and far too long.",
    "It was fine, I suppose.",
    "One of the finest performances of the decade, in a film that never once condescends to its audience.",
]


@pytest.fixture(scope="module")
def registry(module_home: Path) -> PrefixRegistry:
    """Three tasks on MiniLM: sentiment (prefix, v1 champion + v2), length (3 labels, prompt tuning),
    sentiment-pt (P-tuning, its head on the [CLS] pooler while the others read mean-pooled states)."""
    registry = PrefixRegistry(Settings())
    data = tiny_data()
    train_and_register(registry, "sentiment", data, tiny_config(), promote=True, progress=False)
    train_and_register(registry, "sentiment", data, tiny_config(seed=7, learning_rate=0.05), progress=False)
    frame = tiny_data(limit=240).frame.copy()
    frame["label"] = pd.cut(frame["text"].str.len(), [0, 80, 140, 100_000], labels=["short", "medium", "long"])
    frame["label"] = frame["label"].astype(str)
    train_and_register(
        registry,
        "length",
        LabelledTexts(frame, "rt-by-length"),
        tiny_config(method="prompt"),
        promote=True,
        progress=False,
    )
    train_and_register(
        registry, "sentiment-pt", data, tiny_config(method="ptuning", pooling="cls"), promote=True, progress=False
    )
    return registry


@pytest.fixture
def log(tmp_path: Path) -> Iterator[PredictionLog]:
    prediction_log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    yield prediction_log
    prediction_log.close()


@pytest.fixture
def client(registry: PrefixRegistry, log: PredictionLog) -> Iterator[TestClient]:
    app = build_serving_app(
        registry, prediction_log=log, limits=ServingLimits(max_texts=8, max_chars=500), watch_interval=None
    )
    with TestClient(app) as test_client:
        yield test_client


def _peft_predictions(registry: PrefixRegistry, version: PrefixVersion, texts: list[str]) -> Predictions:
    """What PEFT's own forward predicts for `version` (the engine serving it is checked against this)."""
    adapter_dir, manifest = fetch_verified_adapter(registry, version)
    base = load_base_for_classification(
        resolve_base(manifest.base, registry.settings.resolved_cache_dir), manifest.labels
    )
    install_pooling(base.model, stored_pooling(manifest.train_config))
    model = PeftModel.from_pretrained(base.model, str(adapter_dir)).eval()
    return predict_probabilities(
        lambda batch: model(**batch).logits, base.tokenizer, texts, manifest.labels, manifest.max_length
    )


def _predict(client: TestClient, task: str, texts: list[str]) -> dict:
    response = client.post("/v1/predict", json={"task": task, "texts": texts})
    assert response.status_code == 200, response.text
    return response.json()


def test_tasks_of_every_method_share_one_resident_base_and_match_peft(
    client: TestClient, registry: PrefixRegistry
) -> None:
    for task in ("sentiment", "length", "sentiment-pt"):
        body = _predict(client, task, TEXTS)
        version = registry.resolve(task)
        assert body["version"] == version.version
        reference = _peft_predictions(registry, version, TEXTS)  # PEFT's own PeftModel on a fresh base
        served = np.array([[p["probabilities"][label] for label in reference.labels] for p in body["predictions"]])
        np.testing.assert_allclose(served, reference.probabilities, atol=1e-5)
        assert [p["label"] for p in body["predictions"]] == reference.predicted
        assert len({p["prediction_id"] for p in body["predictions"]}) == len(TEXTS)
    listing = client.get("/v1/tasks").json()
    assert listing["resident_base_models"] == ["minilm"] and listing["base_loads"] == 1
    by_task = {t["task"]: t for t in listing["tasks"]}
    assert by_task["length"]["labels"] == ["long", "medium", "short"]
    assert {by_task[t]["method"] for t in by_task} == {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"}
    assert by_task["sentiment"]["serving_version"] == "1" and by_task["sentiment"]["loaded_at"]


def test_alias_moves_swap_the_prefix_without_reloading_the_base(client: TestClient, registry: PrefixRegistry) -> None:
    table = client.app.state.table
    before = _predict(client, "sentiment", TEXTS)
    assert before["version"] == "1"
    registry.promote("sentiment", "2")
    try:
        swaps = table.refresh()
        assert [(s.task, s.from_version, s.to_version) for s in swaps] == [("sentiment", "1", "2")]
        after = _predict(client, "sentiment", TEXTS)
        assert after["version"] == "2"
        assert [p["probabilities"] for p in after["predictions"]] != [p["probabilities"] for p in before["predictions"]]
        assert table.pool.base_loads == 1
        assert swaps[0].seconds < 5  # attaching is loading kilobytes, not a base model
        metrics = client.get("/metrics").text
        assert 'prefix_serving_version{task="sentiment"} 2.0' in metrics
    finally:
        registry.rollback("sentiment")
    table.refresh()
    assert _predict(client, "sentiment", TEXTS)["version"] == "1"
    assert table.pool.base_loads == 1
    assert client.get("/v1/tasks").json()["tasks"][1]["swaps"] == 2


def test_a_request_in_flight_finishes_on_the_version_it_started_with(
    client: TestClient, registry: PrefixRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = client.app.state.table
    backbone = table.current("sentiment").base.backbone
    results: dict[str, dict] = {}
    in_forward, release = threading.Event(), threading.Event()
    states = backbone.states

    def paused(batch: object) -> object:  # the request has taken its version and waits inside its forward pass
        in_forward.set()
        release.wait(60)
        return states(batch)

    monkeypatch.setattr(backbone, "states", paused)
    try:
        worker = threading.Thread(target=lambda: results.update(slow=_predict(client, "sentiment", TEXTS * 2)))
        worker.start()
        assert in_forward.wait(60)
        registry.promote("sentiment", "2")
        table.refresh()
    finally:
        release.set()
    worker.join(timeout=60)
    try:
        assert {p["version"] for p in results["slow"]["predictions"]} == {"1"}
        assert _predict(client, "sentiment", TEXTS)["version"] == "2"
    finally:
        registry.rollback("sentiment")
        table.refresh()


def test_predictions_are_logged_and_take_feedback(client: TestClient, log: PredictionLog) -> None:
    body = _predict(client, "length", TEXTS[:2])
    first = body["predictions"][0]
    ok = client.post("/v1/feedback", json={"prediction_id": first["prediction_id"], "label": "short"})
    assert ok.status_code == 200
    assert ok.json()["correct"] == (first["label"] == "short")
    log.flush()
    record = log.get(first["prediction_id"])
    assert record is not None and record.task == "length" and record.text == TEXTS[0]
    assert record.version == body["version"] and record.feedback_label == "short"
    assert record.request_id == body["request_id"]
    assert client.post("/v1/feedback", json={"prediction_id": "nope", "label": "short"}).status_code == 404
    wrong = client.post("/v1/feedback", json={"prediction_id": first["prediction_id"], "label": "positive"})
    assert wrong.status_code == 422 and "not a label of task 'length'" in wrong.json()["error"]
    window = log.window("length")
    assert len(window) == 2 and window["feedback_label"].notna().sum() == 1


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"task": "nosuch", "texts": ["x"]}, 404, "unknown task 'nosuch'"),
        ({"task": "sentiment", "texts": []}, 422, "at least one text"),
        ({"task": "sentiment", "texts": ["fine", "   "]}, 422, "texts[1] is empty"),
        ({"task": "sentiment", "texts": ["x"] * 9}, 413, "at most 8"),
        ({"task": "sentiment", "texts": ["x" * 501]}, 413, "at most 500 are accepted"),
        ({"task": "sentiment"}, 422, "texts: Field required"),
        ({"task": "sentiment", "texts": "just a string"}, 422, "texts"),
        (b'{"task": "sentiment", "texts": ["unclosed"', 400, "malformed JSON"),
        (b'{"task": "sentiment", "texts": ["\xff\xfe bad bytes"]}', 400, "must be UTF-8 encoded JSON"),
        (b"x" * 4_000_001, 413, "exceeds"),
    ],
)
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(client: TestClient, payload, status, message) -> None:
    if isinstance(payload, bytes):
        response = client.post("/v1/predict", content=payload, headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/predict", json=payload)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert _predict(client, "sentiment", ["still serving"])["predictions"][0]["label"] in ("negative", "positive")


def test_health_and_metrics(client: TestClient) -> None:
    _predict(client, "sentiment", TEXTS)
    client.post("/v1/predict", json={"task": "nosuch", "texts": ["x"]})
    # No key is needed for /healthz, so it names no task: only whether the server and its registry are up.
    assert client.get("/healthz").json() == {"status": "ok", "registry_ok": True, "registry_error": None}
    metrics = client.get("/metrics").text
    assert 'prefix_predictions_total{task="sentiment",version="1"}' in metrics
    assert 'prefix_requests_total{endpoint="predict",status="404",task="unknown"} 1.0' in metrics
    assert "prefix_registry_up 1.0" in metrics and "prefix_resident_base_models 1.0" in metrics
    assert "prefix_request_seconds_bucket" in metrics


def test_openapi_schema_describes_every_response(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    def response_ref(path: str, method: str, status: str) -> str:
        return schema["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]

    assert response_ref("/v1/predict", "post", "200").endswith("/PredictResponse")
    assert response_ref("/v1/feedback", "post", "200").endswith("/FeedbackResponse")
    assert response_ref("/v1/tasks", "get", "200").endswith("/TasksResponse")
    assert response_ref("/healthz", "get", "200").endswith("/HealthResponse")
    assert response_ref("/v1/predict", "post", "413").endswith("/ErrorResponse")
    prediction = schema["components"]["schemas"]["Prediction"]["properties"]
    # regime and router_confidence (issue 22): optional, answered only by tasks with regimes (tests/test_regimes.py).
    assert set(prediction) == {"prediction_id", "label", "confidence", "probabilities", "version"} | {
        "regime",
        "router_confidence",
    }
    assert set(schema["components"]["schemas"]["Prediction"]["required"]) == {
        "prediction_id",
        "label",
        "confidence",
        "probabilities",
        "version",
    }
    # The served answers match their declared models field for field.
    served = client.get("/v1/tasks").json()
    assert set(served) == set(schema["components"]["schemas"]["TasksResponse"]["properties"])
    assert set(served["tasks"][0]) == set(schema["components"]["schemas"]["TaskSummary"]["properties"])
