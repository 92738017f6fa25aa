"""The HTTP server: predict with each task's serving prefix, log every prediction, take feedback.

POST /v1/predict   {"task": T, "texts": [...]}  -> per text: label, probabilities, version, prediction id (as the
                   serving version's task kind reads its head outputs; classification: label and class probabilities);
                   the texts of concurrent requests share forward passes (serving/batcher.py); a task with regimes
                   reads each text with one regime's champion, chosen per text (serving/regime_routing.py)
POST /v1/feedback  {"prediction_id": ID, "label": L, "correction": false}  -> the true label (fresh training data)
POST /v1/generate, /v1/generate/feedback   generation tasks: text out, a reference text back (serving/generate.py)
GET  /v1/tasks     serving version, alias and load time of each task
GET  /healthz      liveness: status and which component is down (never needs a key, never waits on the registry)
GET  /metrics      Prometheus text (a task-scoped key sees only its tasks' series)
GET  /docs, /redoc, /openapi.json   the API's schema (a key is needed once keys exist, like every route but /healthz)

Nothing a client sends changes server state beyond its own log rows: task names are checked against the tasks
being served (no registry look-up), metric labels come from route templates and served tasks only, and every
string must be valid Unicode (a lone surrogate is a 422, not a 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive

from prefix_registry.errors import ConfigError, PrefixRegistryError, first_line
from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.generation import generate_rows
from prefix_registry.registry.rollouts import RolloutMode
from prefix_registry.serving.auth import KeyGate
from prefix_registry.serving.batcher import Batcher, BatchFailed, BatchingConfig, BatchRejected
from prefix_registry.serving.feedback import attach, find_prediction
from prefix_registry.serving.generate import TRUNCATED, GenerateRoutes, add_generate_routes
from prefix_registry.serving.guards import BodySizeLimit, KeyRateLimit, RequestIdOwners
from prefix_registry.serving.http import HTTPError, error_response
from prefix_registry.serving.metrics import ServingMetrics, only_tasks
from prefix_registry.serving.regime_routing import RegimeRouting, RoutedRow, routed_records, routed_response
from prefix_registry.serving.routing import in_shadow_sample, takes_challenger
from prefix_registry.serving.schemas import (
    ERRORS,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    TasksResponse,
)
from prefix_registry.serving.table import AliasWatcher, ServingTable, UnknownTask
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.traffic.prediction_records import (
    PredictionLogError,
    PredictionRecord,
    PredictionSource,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ServingLimits:
    """Request limits; anything beyond them gets a 4xx, never a crash."""

    max_texts: int = 64
    max_chars: int = 20_000
    max_body_bytes: int = 4_000_000
    # None: no feedback rate limit (in-process use, the demo); `prefixctl serve` always sets one from the settings.
    feedback_per_minute: float | None = None
    feedback_burst: int = 100
    # None: no prediction rate limit; else requests per minute per API key (the anonymous client is one key).
    predict_per_minute: float | None = None
    predict_burst: int = 60
    # The most new tokens one /v1/generate input may ask for (a request asking more gets a 422).
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Admitted:
    """A prediction request past its checks: the version that answers it (and the arm it is, during a rollout), a
    shadow challenger that scores it without answering, its caller's key and its request id."""

    attached: AttachedPrefix
    key_name: str | None
    request_id: str
    source: PredictionSource = PredictionSource.HTTP
    shadow: AttachedPrefix | None = None
    in_rollout: bool = False


@dataclass(frozen=True)
class Scored:
    """Timings of a request's rows, and the shadow challenger's rows when it scored them."""

    latency_ms: float
    shadow: list[torch.Tensor] | None = None
    shadow_ms: float = 0.0


class ClientGone(Exception):
    """The client disconnected while its request waited."""


async def unless_disconnected(work: Awaitable[T], receive: Receive) -> T:
    """`work`'s result; or, when the client disconnects first, `work` cancelled (the batcher then drops its rows
    before they reach the model) and ClientGone raised.

    The body has been read by then, so the only message `receive` can still bring is the disconnect.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and watcher.done() and watcher.exception() is None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ClientGone
        return await task  # done; or `receive` failed, which tells nothing about the client: wait for the rows
    finally:
        task.cancel()  # a no-op once done; when this request is cancelled itself, its rows are withdrawn
        watcher.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# A client's X-Request-Id is kept only when it looks like an id; anything else is replaced by a fresh one.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
UNREACHABLE = "registry unreachable"  # what /healthz says of a registry it cannot reach (never the error itself)
# The schema routes FastAPI adds; they need a key like every route but /healthz.
ANONYMOUS = "anonymous"  # the routing key of a request with neither a routing_key nor an API key
SCHEMA_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def create_app(
    table: ServingTable,
    prediction_log: PredictionLog | None = None,
    limits: ServingLimits | None = None,
    watch_interval: float | None = 5.0,
    keys: KeyGate | None = None,
    durable_log: bool = True,
    batching: BatchingConfig | None = None,
) -> FastAPI:
    """The FastAPI app over a ready `ServingTable` (loaded and checked by the caller).

    Args:
        prediction_log: where predictions are written; None logs nothing.
        watch_interval: seconds between registry checks for alias moves; None disables the watcher.
        keys: the API keys that may call; None (or a store with no key yet) serves anonymous clients.
        durable_log: answer a prediction only once its log row is committed (True), or as soon as it is queued.
        batching: how concurrent requests share forward passes (serving/batcher.py); default `BatchingConfig()`.
    """
    limits = limits or ServingLimits()
    keys = keys or KeyGate(None)
    feedback_rate = (
        KeyRateLimit(limits.feedback_per_minute, limits.feedback_burst) if limits.feedback_per_minute else None
    )
    predict_rate = (
        KeyRateLimit(limits.predict_per_minute, limits.predict_burst, "prediction")
        if limits.predict_per_minute
        else None
    )
    request_ids = RequestIdOwners()
    metrics = ServingMetrics(table)
    batching = batching or BatchingConfig()
    if batching.max_queue_rows < limits.max_texts:
        raise ConfigError(
            f"the prediction queue must hold at least one whole request: expected max_queue_rows >= max_texts "
            f"({limits.max_texts}), got {batching.max_queue_rows}"
        )
    batcher = Batcher(batching, observer=metrics)
    generation_batcher = Batcher(batching, run=generate_rows, observer=metrics)
    metrics.queue_rows.set_function(lambda: batcher.queued_rows)
    table.swap_listeners.append(lambda swap: metrics.swap_seconds.observe(swap.seconds))
    watcher = AliasWatcher(table, watch_interval) if watch_interval else None
    regimes = RegimeRouting(table)  # tasks with regimes: each text routed to one regime's champion
    if table.registry_ok:  # the table was refreshed before this listener existed
        regimes.refresh()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        generation_batcher.start()
        if watcher is not None:
            watcher.start()
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            await run_in_threadpool(batcher.stop)  # what is still queued gets 503; the running batch finishes
            await run_in_threadpool(generation_batcher.stop)
            if prediction_log is not None:
                prediction_log.close()  # nothing enqueued is lost on a clean stop

    app = FastAPI(title="prefix-registry", version="0.1.0", lifespan=lifespan)
    app.state.table = table
    app.state.metrics = metrics
    app.state.batcher = batcher
    app.state.prediction_log = prediction_log
    app.state.keys = keys

    @app.middleware("http")
    async def schema_needs_a_key(request: Request, call_next: Any) -> Response:
        if request.url.path in SCHEMA_PATHS:
            try:
                keys.require(request.headers.get("authorization"), None)
            except HTTPError as error:
                return error_response(error.status, error.message, error.headers)
        return await call_next(request)

    @app.middleware("http")
    async def time_requests(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")  # set by the router: a template, never the raw path a client sent
        metrics.latency.labels(getattr(route, "path", "unmatched")).observe(time.perf_counter() - started)
        return response

    # Outermost, so that no byte past the limit is ever buffered by what comes after it.
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(HTTPError)
    async def http_error(_: Request, error: HTTPError) -> JSONResponse:
        return error_response(error.status, error.message, error.headers)

    @app.exception_handler(PrefixRegistryError)
    async def backend_error(_: Request, error: PrefixRegistryError) -> JSONResponse:
        # The log or key store failed under a request: a one-line 503 the client may retry, never a traceback.
        return error_response(503, first_line(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error_response(
                400, "malformed JSON body: " + str(problems[0].get("ctx", {}).get("error", "")).strip()
            )
        described = "; ".join(
            f"{'.'.join(str(x) for x in p.get('loc', ())[1:]) or 'body'}: {p.get('msg')}" for p in problems[:5]
        )
        return error_response(422, f"invalid request: {described}")

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and "parsing the body" in str(error.detail):
            # FastAPI's words for a body that is not text at all, e.g. bytes that are not UTF-8.
            return error_response(400, "request body could not be read: it must be UTF-8 encoded JSON")
        return error_response(error.status_code, str(error.detail))

    def task_label(task: str) -> str:
        return task if task in table.served() else "unknown"  # bounded: served tasks only

    def admit(body: PredictRequest, request: Request) -> Admitted:
        """The caller's key, limits and the version that will answer (in a worker thread: the key store may be
        read from its database)."""
        task = body.task
        try:
            key = keys.require(request.headers.get("authorization"), "predict", task)
            if predict_rate is not None:
                predict_rate.take(key.name if key is not None else None)
            _check_texts(body.texts, limits)
            regime_route = regimes.route(task)
            if body.regime is not None and regime_route is None:
                raise HTTPError(422, f'task {task!r} has no regimes; expected no "regime", got {body.regime!r}')
            # taken once: every row of this request runs on this version (with regimes: on each regime's)
            attached = table.current(task) if regime_route is None else regimes.any_prefix(regime_route)
            if attached.generation is not None:
                raise HTTPError(
                    422, f"task {task!r} is a generation task: expected a classifier, send it to /v1/generate"
                )
        except HTTPError as error:
            metrics.requests.labels("predict", task_label(task), str(error.status)).inc()
            raise
        except UnknownTask as error:
            metrics.requests.labels("predict", "unknown", "404").inc()
            raise HTTPError(404, str(error)) from None
        key_name = key.name if key is not None else None
        client_id = request.headers.get("x-request-id") or ""
        request_id = (
            client_id
            if REQUEST_ID.fullmatch(client_id) and request_ids.claim(client_id, key_name)
            else uuid.uuid4().hex
        )
        if regime_route is not None:
            return Admitted(attached, key_name, request_id)
        return route(Admitted(attached, key_name, request_id), body)

    def route(admitted: Admitted, body: PredictRequest) -> Admitted:
        """The arm of a running rollout that answers (canary, sticky per routing key) or also scores (shadow)."""
        arms = table.arms(body.task)
        if arms is None:
            return admitted
        rollout, challenger = arms.rollout, arms.challenger
        if rollout.mode is RolloutMode.CANARY:
            routing_key = body.routing_key or admitted.key_name or ANONYMOUS
            if takes_challenger(body.task, challenger.version, routing_key, rollout.share):
                return replace(admitted, attached=challenger, source=PredictionSource.CANARY, in_rollout=True)
            return replace(admitted, in_rollout=True)
        if in_shadow_sample(body.task, challenger.version, admitted.request_id, rollout.share):
            return replace(admitted, shadow=challenger, in_rollout=True)
        return replace(admitted, in_rollout=True)

    def count_error(task: str, version: str) -> None:
        """A failed request of a rollout's arm, for the judge's error-rate guardrail (never fails the request)."""
        try:
            table.registry.rollouts.store.record_error(task, version)
        except Exception as error:
            logger.warning("%s: error of v%s not counted for the rollout: %s", task, version, first_line(error))

    def records_of(
        body: PredictRequest,
        admitted: Admitted,
        attached: AttachedPrefix,
        outputs: list[torch.Tensor],
        source: PredictionSource,
        latency_ms: float,
    ) -> list[PredictionRecord]:
        return [
            PredictionRecord.new(
                body.task,
                attached.version,
                text,
                prediction.predicted_label,
                prediction.scores,
                request_id=admitted.request_id,
                source=source.value,
                key_name=admitted.key_name,
                latency_ms=latency_ms,
            )
            for text, prediction in zip(
                body.texts,
                (attached.kind.logged_prediction(row.numpy(), attached.labels) for row in outputs),
                strict=True,
            )
        ]

    def store(task: str, records: list[PredictionRecord]) -> None:
        """Log the rows (committed before the answer when `durable_log`) and count the request as answered."""
        if prediction_log is not None:
            try:
                if durable_log:
                    prediction_log.commit(records)  # the 200 that follows promises the rows are stored
                else:
                    prediction_log.enqueue(records)
            except PredictionLogError as error:
                metrics.requests.labels("predict", task, "503").inc()
                raise HTTPError(503, f"prediction not logged, so not answered; retry: {error}") from None
            metrics.log_pending.set(prediction_log.pending)
        metrics.requests.labels("predict", task, "200").inc()

    def answer_routed(
        body: PredictRequest, admitted: Admitted, rows: list[RoutedRow], latency_ms: float
    ) -> dict[str, Any]:
        """A task with regimes: each row logged under its regime's model and version (serving/regime_routing.py)."""
        records = routed_records(body.texts, rows, admitted.request_id, admitted.key_name, latency_ms)
        store(body.task, records)
        for row in rows:
            metrics.predictions.labels(body.task, f"{row.choice.regime}:{row.attached.version}").inc()
        return routed_response(body.task, admitted.request_id, rows, records)

    def answer(
        body: PredictRequest, admitted: Admitted, outputs: list[torch.Tensor], scored: Scored | None = None
    ) -> dict[str, Any]:
        """The served version's kind turns each row into its prediction (classification: the top label and every
        label's probability, as the response has always carried); logged before it is answered, with the shadow's
        rows (`scored`) in the same commit, which the response never carries."""
        task, attached = body.task, admitted.attached
        scored = scored or Scored(0.0)
        records = records_of(body, admitted, attached, outputs, admitted.source, scored.latency_ms)
        shadow_records = (
            records_of(body, admitted, admitted.shadow, scored.shadow, PredictionSource.SHADOW, scored.shadow_ms)
            if admitted.shadow is not None and scored.shadow is not None
            else []
        )
        store(task, records + shadow_records)
        metrics.predictions.labels(task, attached.version).inc(len(records))
        return {
            "task": task,
            "version": attached.version,
            "request_id": admitted.request_id,
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

    # async: the request waits for its rows on the event loop (no thread held); the forward pass runs in the
    # batcher's worker, the key check and the log commit in the thread pool.
    async def run_shadow(shadow: AttachedPrefix, texts: list[str]) -> tuple[list[torch.Tensor], float]:
        started = time.perf_counter()
        outputs = await batcher.submit(shadow, texts)
        return outputs, (time.perf_counter() - started) * 1000

    async def shadow_result(
        task: str, shadow: AttachedPrefix, future: asyncio.Future[tuple[list[torch.Tensor], float]]
    ) -> Scored:
        """The shadow's rows, or none when it failed (counted against it; the request is answered anyway)."""
        try:
            outputs, seconds_ms = await future
        except (BatchRejected, BatchFailed) as error:
            logger.warning("%s: shadow v%s did not score a request: %s", task, shadow.version, first_line(error))
            await run_in_threadpool(count_error, task, shadow.version)
            return Scored(0.0)
        return Scored(0.0, outputs, seconds_ms)

    # exclude_none: a task without regimes answers exactly the fields it always has (no null regime).
    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS, response_model_exclude_none=True)
    async def predict(body: PredictRequest, request: Request) -> dict[str, Any]:
        admitted = await run_in_threadpool(admit, body, request)
        started = time.perf_counter()
        regime_route = regimes.route(body.task)
        if regime_route is not None:
            try:
                rows = await unless_disconnected(
                    regimes.run(regime_route, body.texts, body.regime, batcher), request.receive
                )
            except BatchRejected as error:
                metrics.requests.labels("predict", body.task, "503").inc()
                raise HTTPError(503, str(error), {"Retry-After": str(error.retry_after)}) from None
            except BatchFailed as error:
                metrics.requests.labels("predict", body.task, "500").inc()
                raise HTTPError(500, str(error)) from None
            except ClientGone:
                metrics.requests.labels("predict", body.task, "499").inc()
                raise HTTPError(499, "the client disconnected before its texts ran") from None
            latency_ms = (time.perf_counter() - started) * 1000
            return await run_in_threadpool(answer_routed, body, admitted, rows, latency_ms)
        # Queued at the same moment as the answering rows, so the batcher runs both in one forward pass.
        shadow = asyncio.ensure_future(run_shadow(admitted.shadow, body.texts)) if admitted.shadow is not None else None
        try:
            outputs = await unless_disconnected(batcher.submit(admitted.attached, body.texts), request.receive)
        except BatchRejected as error:
            if shadow is not None:
                shadow.cancel()
            metrics.requests.labels("predict", body.task, "503").inc()
            raise HTTPError(503, str(error), {"Retry-After": str(error.retry_after)}) from None
        except BatchFailed as error:
            if shadow is not None:
                shadow.cancel()
            if admitted.in_rollout:
                await run_in_threadpool(count_error, body.task, admitted.attached.version)
            metrics.requests.labels("predict", body.task, "500").inc()
            raise HTTPError(500, str(error)) from None
        except ClientGone:
            # Nobody reads this answer; 499 (as nginx names a client that closed its request) keeps it apart in
            # the request counter from the server's own refusals.
            if shadow is not None:
                shadow.cancel()
            metrics.requests.labels("predict", body.task, "499").inc()
            raise HTTPError(499, "the client disconnected before its texts ran") from None
        latency_ms = (time.perf_counter() - started) * 1000
        scored = Scored(latency_ms)
        if shadow is not None and admitted.shadow is not None:
            found = await shadow_result(body.task, admitted.shadow, shadow)
            scored = Scored(latency_ms, found.shadow, found.shadow_ms)
        return await run_in_threadpool(answer, body, admitted, outputs, scored)

    @app.post("/v1/feedback", response_model=FeedbackResponse, responses=ERRORS)
    def feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
        authorization = request.headers.get("authorization")
        found = find_prediction(keys, feedback_rate, prediction_log, authorization, body.prediction_id)
        record = found.record
        if TRUNCATED in record.probabilities:
            reference_route = "/v1/generate/feedback"
            raise HTTPError(
                422, f"prediction {body.prediction_id!r} is a generation: send its reference text to {reference_route}"
            )
        labels = list(record.probabilities)
        if body.label not in labels:
            raise HTTPError(422, f"label {body.label!r} is not a label of task {record.task!r}: {labels}")
        attach(found, body.label, body.correction)
        metrics.feedback.labels(task_label(record.task)).inc()
        return {
            "prediction_id": body.prediction_id,
            "task": record.task,
            "version": record.version,
            "label": body.label,
            "predicted_label": record.predicted_label,
            "correct": body.label == record.predicted_label,
        }

    @app.get("/v1/tasks", response_model=TasksResponse, responses=ERRORS)
    def tasks(request: Request) -> dict[str, Any]:
        key = keys.require(request.headers.get("authorization"), None)
        every_task = key is None or key.tasks is None
        return {
            # A task-scoped key sees its own tasks only.
            "tasks": [state.summary() for state in table.states() if key is None or key.allows_task(state.task)],
            "registry_ok": table.registry_ok,
            # The error may name any task: a task-scoped key is told only that the registry is unreachable.
            "registry_error": table.last_error if every_task or table.registry_ok else UNREACHABLE,
            "resident_base_models": sorted(table.pool.bases),
            "base_loads": table.pool.base_loads,
        }

    # async: runs on the event loop, so handlers busy in the thread pool (or a hung registry) cannot starve it.
    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> dict[str, Any]:
        # Unauthenticated: which component is down, never the error itself (it may name hosts, users, paths), nor
        # which tasks are served (a key's scope decides who sees those, in /v1/tasks).
        return {
            "status": "ok" if table.registry_ok else "degraded",
            "registry_ok": table.registry_ok,
            "registry_error": None if table.registry_ok else UNREACHABLE,
        }

    @app.get("/metrics")
    def prometheus(request: Request) -> Response:
        key = keys.require(request.headers.get("authorization"), None)
        if prediction_log is not None:
            metrics.log_pending.set(prediction_log.pending)
        text = metrics.render()
        if key is not None and key.tasks is not None:
            text = only_tasks(text, set(key.tasks))
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    add_generate_routes(
        app,
        GenerateRoutes(
            table, generation_batcher, keys, limits, metrics, request_ids, REQUEST_ID, prediction_log, durable_log,
            predict_rate, feedback_rate,
        ),
    )  # fmt: skip
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
