"""Specification of cross-request batching (issue 20): concurrent requests share forward passes, each gets exactly its
own rows, and a busy server refuses work (503) rather than collapse.

Every test holds the batcher's worker inside a forward pass with a gate while it queues the requests under test, so
which rows share a batch, and which never reach the model, is decided by events, never by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from prefix_registry.errors import ConfigError
from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.engine import Row, forward
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.serving.app import ServingLimits, create_app
from prefix_registry.serving.batcher import Batcher, BatchingConfig, DeadlineExceeded, ShuttingDown
from prefix_registry.serving.metrics import only_tasks
from prefix_registry.serving.table import ServingTable
from prefix_registry.settings import Settings
from prefix_registry.training.data import LabelledTexts
from tests.conftest import tiny_config, tiny_data

TEXTS = [
    "A warm, funny and wise film.",
    "Tedious and far too long.",
    "It was fine, I suppose.",
    "One of the finest performances of the decade, in a film that never once condescends to its audience.",
]
SCHEMA = Path(__file__).parent / "fixtures" / "openapi.json"


@pytest.fixture(scope="module")
def table(module_home: Path) -> ServingTable:
    """Two tasks on one MiniLM base: sentiment (prefix tuning, 2 labels) and length (prompt tuning, 3 labels)."""
    registry = PrefixRegistry(Settings())
    train_and_register(registry, "sentiment", tiny_data(), tiny_config(), promote=True, progress=False)
    frame = tiny_data(limit=240).frame.copy()
    frame["label"] = pd.cut(frame["text"].str.len(), [0, 80, 140, 100_000], labels=["short", "medium", "long"])
    frame["label"] = frame["label"].astype(str)
    train_and_register(
        registry, "length", LabelledTexts(frame, "rt-by-length"), tiny_config(method="prompt"), promote=True
    )
    table = ServingTable(registry, PrefixPool(registry.settings.resolved_cache_dir))
    table.refresh(strict=True)
    return table


class Gate:
    """The batcher's forward pass, wrapped: records each batch's (task, text) rows and, while closed, holds the
    worker inside the pass it entered."""

    def __init__(self, run: Callable[[Sequence[Row]], list[torch.Tensor]], fail_once: bool = False) -> None:
        self.run = run
        self.fail_once = fail_once
        self.batches: list[list[tuple[str, str]]] = []
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.opened.set()

    def close(self) -> None:
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()

    def __call__(self, rows: Sequence[Row]) -> list[torch.Tensor]:
        self.batches.append([(row.prefix.task, row.text) for row in rows])
        self.entered.set()
        assert self.opened.wait(60), "the test never opened the gate"
        if self.fail_once:
            self.fail_once = False
            raise RuntimeError("CUDA error: device lost\nsecond line of a long traceback")
        return self.run(rows)

    def texts_run(self) -> set[str]:
        return {text for batch in self.batches for _, text in batch}


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition (never a fixed sleep): the queue state a test needs before its next step."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.002)


async def async_wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.002)


def gated_app(table: ServingTable, batching: BatchingConfig, fail_once: bool = False) -> tuple[FastAPI, Gate]:
    app = create_app(table, watch_interval=None, limits=ServingLimits(max_texts=8), batching=batching)
    gate = Gate(app.state.batcher.run, fail_once)
    app.state.batcher.run = gate
    return app, gate


@pytest.fixture
def held(table: ServingTable) -> Iterator[Callable[..., tuple[TestClient, Gate]]]:
    """A started app whose worker is held in a first forward pass (one 'blocker' text), and a client for it."""
    with contextlib.ExitStack() as stack:

        def start(batching: BatchingConfig) -> tuple[TestClient, Gate]:
            app, gate = gated_app(table, batching)
            client = stack.enter_context(TestClient(app))
            gate.close()
            blocker = threading.Thread(target=_post, args=(client, "sentiment", ["blocker"], {}))
            blocker.start()
            stack.callback(blocker.join, 60)
            stack.callback(gate.open)  # first of the two: callbacks run last in, first out
            assert gate.entered.wait(60)
            return client, gate

        yield start


def _post(client: TestClient, task: str, texts: list[str], into: dict[str, Any]) -> None:
    response = client.post("/v1/predict", json={"task": task, "texts": texts})
    into.update(status=response.status_code, body=response.json(), headers=response.headers)


def _in_threads(client: TestClient, requests: list[tuple[str, list[str]]]) -> tuple[list[threading.Thread], list]:
    answers: list[dict[str, Any]] = [{} for _ in requests]
    threads = [
        threading.Thread(target=_post, args=(client, task, texts, answer))
        for (task, texts), answer in zip(requests, answers, strict=True)
    ]
    for thread in threads:
        thread.start()
    return threads, answers


def _probabilities(answer: dict[str, Any], labels: list[str]) -> np.ndarray:
    return np.array([[p["probabilities"][label] for label in labels] for p in answer["body"]["predictions"]])


# --- what a batch computes --------------------------------------------------------------------------------------


def test_a_mixed_batch_gives_each_row_what_its_task_gives_it_alone(table: ServingTable) -> None:
    sentiment, length = table.current("sentiment"), table.current("length")
    gate = Gate(forward)
    batcher = Batcher(BatchingConfig(max_batch=64, max_wait_ms=0), run=gate)
    requests: list[tuple[AttachedPrefix, list[str]]] = [
        (sentiment, TEXTS[:2]),
        (length, TEXTS[1:]),
        (sentiment, TEXTS[3:]),
    ]

    async def scenario() -> list[list[torch.Tensor]]:
        gate.close()
        blocker = asyncio.ensure_future(batcher.submit(sentiment, ["blocker"]))
        await asyncio.to_thread(gate.entered.wait, 60)
        submitted = [asyncio.ensure_future(batcher.submit(prefix, texts)) for prefix, texts in requests]
        await async_wait_until(lambda: batcher.queued_rows == 6, "six queued rows")
        gate.open()
        await blocker
        return list(await asyncio.gather(*submitted))

    try:
        results = asyncio.run(scenario())
    finally:
        batcher.stop()
    # The three requests, of two tasks and two methods, ran in one forward pass after the blocker's.
    assert len(gate.batches) == 2
    assert sorted(gate.batches[1]) == sorted((p.task, text) for p, texts in requests for text in texts)
    for (prefix, texts), outputs in zip(requests, results, strict=True):
        assert len(outputs) == len(texts)
        for text, output in zip(texts, outputs, strict=True):
            alone = forward([Row(text, prefix)])[0]
            assert output.shape == (len(prefix.labels),)
            torch.testing.assert_close(output, alone, atol=1e-5, rtol=0)


def test_concurrent_requests_share_one_forward_pass_and_each_gets_its_own_rows(
    table: ServingTable, held: Callable[..., tuple[TestClient, Gate]]
) -> None:
    client, gate = held(BatchingConfig(max_batch=32, max_wait_ms=0))
    requests = [("length", TEXTS[:3]), ("sentiment", TEXTS[2:]), ("length", TEXTS[3:])]
    threads, answers = _in_threads(client, requests)
    wait_until(lambda: client.app.state.batcher.queued_rows == 6, "six queued rows")
    gate.open()
    for thread in threads:
        thread.join(60)
    assert len(gate.batches) == 2 and len(gate.batches[1]) == 6
    for (task, texts), answer in zip(requests, answers, strict=True):
        assert answer["status"] == 200, answer
        attached = table.current(task)
        alone = table.pool.predict(attached, texts)  # the task's own pass over just these texts
        np.testing.assert_allclose(_probabilities(answer, alone.labels), alone.probabilities, atol=1e-5)
        assert [p["label"] for p in answer["body"]["predictions"]] == alone.predicted
        assert {p["version"] for p in answer["body"]["predictions"]} == {attached.version}
    metrics = client.get("/metrics").text
    assert "prefix_batch_rows_count 2.0" in metrics and "prefix_batch_rows_sum 7.0" in metrics
    assert 'prefix_batch_task_rows_total{task="length"} 4.0' in metrics
    assert 'prefix_batch_task_rows_total{task="sentiment"} 3.0' in metrics  # the blocker's text and two more
    assert "prefix_queue_wait_seconds_count 4.0" in metrics and "prefix_queue_rows 0.0" in metrics
    # A key scoped to sentiment sees no series of another task.
    scoped = only_tasks(metrics.encode(), {"sentiment"}).decode()
    assert 'task="length"' not in scoped and 'prefix_batch_task_rows_total{task="sentiment"} 3.0' in scoped


def test_max_batch_one_runs_every_text_alone_as_the_unbatched_server_did(
    table: ServingTable, held: Callable[..., tuple[TestClient, Gate]]
) -> None:
    client, gate = held(BatchingConfig(max_batch=1, max_wait_ms=0))
    requests = [("sentiment", TEXTS[:2]), ("length", TEXTS[2:])]
    threads, answers = _in_threads(client, requests)
    wait_until(lambda: client.app.state.batcher.queued_rows == 4, "four queued rows")
    gate.open()
    for thread in threads:
        thread.join(60)
    assert [len(batch) for batch in gate.batches] == [1] * 5
    for (task, texts), answer in zip(requests, answers, strict=True):
        alone = table.pool.predict(table.current(task), texts)
        np.testing.assert_allclose(_probabilities(answer, alone.labels), alone.probabilities, atol=1e-5)


def test_a_request_larger_than_max_batch_is_split_and_answered_in_order(table: ServingTable) -> None:
    app, gate = gated_app(table, BatchingConfig(max_batch=3, max_wait_ms=0))
    texts = [*TEXTS, "Short.", "Another one, a little longer than the last.", "x y z"]
    with TestClient(app) as client:
        answer: dict[str, Any] = {}
        _post(client, "length", texts, answer)
    assert [len(batch) for batch in gate.batches] == [3, 3, 1]
    alone = table.pool.predict(table.current("length"), texts)
    np.testing.assert_allclose(_probabilities(answer, alone.labels), alone.probabilities, atol=1e-5)


# --- refusing work instead of collapsing ---------------------------------------------------------------------------


def test_a_full_queue_answers_503_with_retry_after_and_the_server_recovers(
    held: Callable[..., tuple[TestClient, Gate]],
) -> None:
    client, gate = held(BatchingConfig(max_batch=8, max_wait_ms=0, max_queue_rows=8))
    threads, answers = _in_threads(client, [("length", TEXTS * 2)])  # 8 rows: the queue is full
    wait_until(lambda: client.app.state.batcher.queued_rows == 8, "a full queue")
    refused = client.post("/v1/predict", json={"task": "sentiment", "texts": ["one more"]})
    assert refused.status_code == 503
    assert refused.json()["error"].startswith("prediction queue full: 8 of 8 texts waiting, 1 more do not fit")
    assert int(refused.headers["retry-after"]) >= 1
    gate.open()
    threads[0].join(60)
    assert answers[0]["status"] == 200 and len(answers[0]["body"]["predictions"]) == 8
    assert client.post("/v1/predict", json={"task": "sentiment", "texts": ["one more"]}).status_code == 200
    assert "one more" in gate.texts_run()  # computed once, for the request that was admitted
    metrics = client.get("/metrics").text
    assert 'prefix_rejected_requests_total{reason="queue_full"} 1.0' in metrics
    assert 'prefix_requests_total{endpoint="predict",status="503",task="sentiment"} 1.0' in metrics


def test_a_disconnected_clients_rows_are_never_computed(table: ServingTable) -> None:
    app, gate = gated_app(table, BatchingConfig(max_batch=32, max_wait_ms=0))
    batcher = app.state.batcher
    body = json.dumps({"task": "length", "texts": ["a client that hangs up"]}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        hung_up = asyncio.Event()
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive() -> dict[str, Any]:
            message = next(messages, None)
            if message is not None:
                return message
            await hung_up.wait()  # the connection stays open until the client goes
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        gate.close()
        blocker = asyncio.ensure_future(batcher.submit(table.current("sentiment"), ["blocker"]))
        await asyncio.to_thread(gate.entered.wait, 60)
        request = asyncio.ensure_future(app(scope, receive, send))
        await async_wait_until(lambda: batcher.queued_rows == 1, "the request's row in the queue")
        hung_up.set()
        await request
        assert batcher.queued_rows == 0  # withdrawn at once, while the worker is still busy
        gate.open()
        await blocker
        # A later batch runs, and the withdrawn row is not in it.
        await batcher.submit(table.current("sentiment"), ["after"])

    try:
        asyncio.run(scenario())
    finally:
        batcher.stop()
    assert gate.texts_run() == {"blocker", "after"}
    assert sent[0]["status"] == 499
    metrics = app.state.metrics.render().decode()
    assert 'prefix_rejected_requests_total{reason="disconnected"} 1.0' in metrics


def test_a_request_past_its_deadline_gets_503_and_is_never_computed(table: ServingTable) -> None:
    app, gate = gated_app(table, BatchingConfig(max_batch=32, max_wait_ms=0, timeout_s=0.2))
    batcher = app.state.batcher
    sentiment = table.current("sentiment")
    gate.close()
    # The blocker has its own, far deadline; the HTTP request gets the server's 0.2 s.
    blocker = threading.Thread(
        target=lambda: asyncio.run(batcher.submit(sentiment, ["blocker"], deadline=time.monotonic() + 60))
    )
    with TestClient(app) as client:
        blocker.start()
        assert gate.entered.wait(60)
        late = client.post("/v1/predict", json={"task": "length", "texts": ["too late"]})
        gate.open()
        blocker.join(60)

        async def already_late() -> None:
            with pytest.raises(DeadlineExceeded, match="deadline"):
                await batcher.submit(sentiment, ["never"], deadline=time.monotonic() - 1)

        asyncio.run(already_late())
        metrics = client.get("/metrics").text
    assert late.status_code == 503 and "deadline" in late.json()["error"] and "retry-after" in late.headers
    assert gate.texts_run() == {"blocker"}
    assert 'prefix_rejected_requests_total{reason="deadline"} 2.0' in metrics


def test_a_failing_forward_fails_only_its_batch_and_the_worker_goes_on(table: ServingTable) -> None:
    app, gate = gated_app(table, BatchingConfig(max_wait_ms=0), fail_once=True)
    with TestClient(app) as client:
        failed = client.post("/v1/predict", json={"task": "sentiment", "texts": ["first"]})
        after = client.post("/v1/predict", json={"task": "sentiment", "texts": ["second"]})
    assert failed.status_code == 500
    assert failed.json() == {"error": "prediction failed in the model: CUDA error: device lost", "status": 500}
    assert after.status_code == 200 and after.json()["predictions"][0]["label"] in ("negative", "positive")
    assert gate.batches == [[("sentiment", "first")], [("sentiment", "second")]]


def test_stopping_refuses_what_is_queued_and_lets_the_running_batch_finish(table: ServingTable) -> None:
    sentiment = table.current("sentiment")
    gate = Gate(forward)
    batcher = Batcher(BatchingConfig(max_wait_ms=0), run=gate)

    async def scenario() -> list[torch.Tensor]:
        gate.close()
        running = asyncio.ensure_future(batcher.submit(sentiment, ["running"]))
        await asyncio.to_thread(gate.entered.wait, 60)
        queued = asyncio.ensure_future(batcher.submit(sentiment, ["queued"]))
        await async_wait_until(lambda: batcher.queued_rows == 1, "a queued row")
        stopping = threading.Thread(target=batcher.stop)
        stopping.start()
        with pytest.raises(ShuttingDown):
            await queued
        gate.open()
        outputs = await running
        await asyncio.to_thread(stopping.join, 60)
        with pytest.raises(ShuttingDown):
            await batcher.submit(sentiment, ["after the stop"])
        return outputs

    outputs = asyncio.run(scenario())
    assert len(outputs) == 1 and gate.texts_run() == {"running"}


# --- configuration and the contract with clients ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_batch": 0}, "batching max_batch: expected an integer from 1 to 1024, got 0"),
        ({"max_wait_ms": -1}, "batching max_wait_ms: expected 0 to 1000 ms, got -1"),
        ({"max_queue_rows": 0}, "batching max_queue_rows: expected 1 to 1000000 rows, got 0"),
        ({"timeout_s": 0}, "batching timeout_s: expected above 0 and at most 3600 s, got 0"),
    ],
)
def test_batching_settings_out_of_range_are_refused_in_one_line(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        BatchingConfig(**changes)


def test_a_queue_smaller_than_one_request_is_refused(table: ServingTable) -> None:
    with pytest.raises(ConfigError, match=r"expected max_queue_rows >= max_texts \(64\), got 10"):
        create_app(table, watch_interval=None, batching=BatchingConfig(max_queue_rows=10))


def test_serve_refuses_a_batch_size_out_of_range(cli, home: Path) -> None:
    result = cli("serve", "--max-batch", "0")
    assert result.exit_code == 2
    assert "batching max_batch: expected an integer from 1 to 1024, got 0" in result.stderr


# Optional request and response fields added since the snapshot (issue 21: canary routing, a task's rollout; issue
# 22: a request's regime, and each prediction's regime and router confidence, for tasks with regimes).
ADDED_OPTIONAL_FIELDS = {
    ("PredictRequest", "routing_key"),
    ("TaskSummary", "rollout"),
    ("PredictRequest", "regime"),
    ("Prediction", "regime"),
    ("Prediction", "router_confidence"),
}
# Paths and their schemas added since the snapshot (issue 23: generation tasks); no old path or schema changes.
ADDED_PATHS = {"/v1/generate", "/v1/generate/feedback"}
ADDED_SCHEMAS = {
    "GenerateRequest",
    "GenerateResponse",
    "Generation",
    "GenerateFeedbackRequest",
    "GenerateFeedbackResponse",
}


def test_the_openapi_schema_is_unchanged_for_clients(table: ServingTable) -> None:
    # The snapshot was taken from the server before batching; clients see the same contract: every path and schema
    # the same, byte for byte, but for the optional fields named above (an old client neither sends nor needs them).
    snapshot = json.loads(SCHEMA.read_text(encoding="utf-8"))
    with TestClient(create_app(table, watch_interval=None)) as client:
        served = client.get("/openapi.json").json()
    schemas = served["components"]["schemas"]
    for path in ADDED_PATHS:
        served["paths"].pop(path)
    for model in ADDED_SCHEMAS:
        schemas.pop(model)
    for model, field in ADDED_OPTIONAL_FIELDS:
        assert field not in schemas[model].get("required", []), (model, field)
        assert {"type": "null"} in schemas[model]["properties"].pop(field)["anyOf"], (model, field)
    assert json.dumps(served, sort_keys=True) == json.dumps(snapshot, sort_keys=True)
