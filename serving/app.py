"""The HTTP server: classify texts with each task's serving prefix, log every prediction, take feedback.

POST /v1/predict   {"task": T, "texts": [...]}  -> per text: label, probabilities, version, prediction id
POST /v1/feedback  {"prediction_id": ID, "label": L}  -> attaches the true label (fresh training data)
GET  /v1/tasks     serving version, alias and load time of each task
GET  /healthz      liveness and registry reachability
GET  /metrics      Prometheus text
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefix_registry.monitoring.prediction_log import PredictionLog, PredictionRecord
from prefix_registry.serving.metrics import ServingMetrics
from prefix_registry.serving.table import AliasWatcher, ServingTable, UnknownTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingLimits:
    """Request limits; anything beyond them gets a 4xx, never a crash."""

    max_texts: int = 64
    max_chars: int = 20_000
    max_body_bytes: int = 4_000_000


class PredictRequest(BaseModel):
    task: str = Field(description="Task whose serving version classifies the texts.")
    texts: list[str] = Field(description="Texts to classify.")


class FeedbackRequest(BaseModel):
    prediction_id: str = Field(description="The id returned with a prediction.")
    label: str = Field(description="The true label of that prediction's text.")


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(
    table: ServingTable,
    prediction_log: PredictionLog | None = None,
    limits: ServingLimits | None = None,
    watch_interval: float | None = 5.0,
) -> FastAPI:
    """The FastAPI app over a ready `ServingTable` (loaded and checked by the caller).

    Args:
        prediction_log: where predictions are written (in the background); None logs nothing.
        watch_interval: seconds between registry checks for alias moves; None disables the watcher.
    """
    limits = limits or ServingLimits()
    metrics = ServingMetrics(table)
    table.swap_listeners.append(lambda swap: metrics.swap_seconds.observe(swap.seconds))
    watcher = AliasWatcher(table, watch_interval) if watch_interval else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if watcher is not None:
            watcher.start()
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            if prediction_log is not None:
                prediction_log.close()  # nothing enqueued is lost on a clean stop

    app = FastAPI(title="prefix-registry", version="0.1.0", lifespan=lifespan)
    app.state.table = table
    app.state.metrics = metrics
    app.state.prediction_log = prediction_log

    @app.middleware("http")
    async def limit_body_and_time(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            return _error(413, f"request body of {length} bytes exceeds {limits.max_body_bytes}")
        started = time.perf_counter()
        response = await call_next(request)
        metrics.latency.labels(request.url.path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(HTTPError)
    async def http_error(_: Request, error: HTTPError) -> JSONResponse:
        return _error(error.status, error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return _error(400, "malformed JSON body: " + str(problems[0].get("ctx", {}).get("error", "")).strip())
        described = "; ".join(
            f"{'.'.join(str(x) for x in p.get('loc', ())[1:]) or 'body'}: {p.get('msg')}" for p in problems[:5]
        )
        return _error(422, f"invalid request: {described}")

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and "parsing the body" in str(error.detail):
            # FastAPI's words for a body that is not text at all, e.g. bytes that are not UTF-8.
            return _error(400, "request body could not be read: it must be UTF-8 encoded JSON")
        return _error(error.status_code, str(error.detail))

    @app.post("/v1/predict")
    def predict(body: PredictRequest, request: Request) -> dict[str, Any]:
        task = body.task
        try:
            _check_texts(body.texts, limits)
            attached = table.current(task)
        except HTTPError as error:
            metrics.requests.labels("predict", task, str(error.status)).inc()
            raise
        except UnknownTask as error:
            metrics.requests.labels("predict", "unknown", "404").inc()
            raise HTTPError(404, str(error)) from None
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        predictions = table.pool.predict(attached, body.texts)
        records = [
            PredictionRecord.new(
                task,
                attached.version,
                text,
                label,
                {lab: float(p) for lab, p in zip(predictions.labels, probabilities, strict=True)},
                request_id=request_id,
                source=request.headers.get("x-prediction-source", "http"),
            )
            for text, label, probabilities in zip(
                body.texts, predictions.predicted, predictions.probabilities, strict=True
            )
        ]
        if prediction_log is not None:
            prediction_log.enqueue(records)
            metrics.log_pending.set(prediction_log.pending)
        metrics.requests.labels("predict", task, "200").inc()
        metrics.predictions.labels(task, attached.version).inc(len(records))
        return {
            "task": task,
            "version": attached.version,
            "request_id": request_id,
            "predictions": [
                {
                    "prediction_id": r.prediction_id,
                    "label": r.predicted_label,
                    "confidence": r.confidence,
                    "probabilities": r.probabilities,
                    "version": r.version,
                }
                for r in records
            ],
        }

    @app.post("/v1/feedback")
    def feedback(body: FeedbackRequest) -> dict[str, Any]:
        if prediction_log is None:
            raise HTTPError(409, "this server keeps no prediction log, so it cannot take feedback")
        record = prediction_log.get(body.prediction_id)
        if record is None:
            prediction_log.flush(timeout=5)
            record = prediction_log.get(body.prediction_id)
        if record is None:
            raise HTTPError(404, f"unknown prediction id {body.prediction_id!r}")
        labels = list(record.probabilities)
        if body.label not in labels:
            raise HTTPError(422, f"label {body.label!r} is not a label of task {record.task!r}: {labels}")
        prediction_log.attach_feedback(body.prediction_id, body.label)
        metrics.feedback.labels(record.task).inc()
        return {
            "prediction_id": body.prediction_id,
            "task": record.task,
            "version": record.version,
            "label": body.label,
            "predicted_label": record.predicted_label,
            "correct": body.label == record.predicted_label,
        }

    @app.get("/v1/tasks")
    def tasks() -> dict[str, Any]:
        return {
            "tasks": [state.summary() for state in table.states()],
            "registry_ok": table.registry_ok,
            "registry_error": table.last_error,
            "resident_base_models": sorted(table.pool.bases),
            "base_loads": table.pool.base_loads,
        }

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok" if table.registry_ok else "degraded",
            "serving": table.served(),
            "registry_ok": table.registry_ok,
            "registry_error": table.last_error,
        }

    @app.get("/metrics")
    def prometheus() -> Response:
        if prediction_log is not None:
            metrics.log_pending.set(prediction_log.pending)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _check_texts(texts: list[str], limits: ServingLimits) -> None:
    if not texts:
        raise HTTPError(422, "texts must hold at least one text")
    if len(texts) > limits.max_texts:
        raise HTTPError(413, f"{len(texts)} texts in one request; at most {limits.max_texts} are accepted")
    for i, text in enumerate(texts):
        if not text.strip():
            raise HTTPError(422, f"texts[{i}] is empty")
        if len(text) > limits.max_chars:
            raise HTTPError(413, f"texts[{i}] has {len(text)} characters; at most {limits.max_chars} are accepted")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)
