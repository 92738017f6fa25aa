"""The generation routes: prefixes that write, served beside the classifiers with the same keys, limits and log.

POST /v1/generate           {"task": T, "inputs": [...], "max_new_tokens": n, "do_sample": false, "seed": s}
                            -> per input: the generated text, its token count, whether it hit the budget, the version,
                            a prediction id; greedy unless `do_sample`; the inputs of concurrent requests (any
                            generating task and method) share one decoding loop (inference/generation.py, through a
                            `Batcher` of its own)
POST /v1/generate/feedback  {"prediction_id": ID, "reference": TEXT, "correction": false}
                            -> the reference text stored as the prediction's label, and the output's ROUGE-L against it

`max_new_tokens` defaults to the version's own (what it was scored with), and is bounded by the server's
`ServingLimits.max_new_tokens`. Each generation is a row of the prediction log: the input in `text`, the output in
`predicted_label`, and in the scores its length in words, its new tokens and whether it was truncated.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from prefix_registry.inference.attached import AttachedPrefix, GenerationOptions
from prefix_registry.inference.generation import decode, truncated
from prefix_registry.kinds.generation import ROUGE_L, rouge_scores
from prefix_registry.serving.auth import KeyGate
from prefix_registry.serving.batcher import Batcher, BatchFailed, BatchRejected
from prefix_registry.serving.feedback import attach, find_prediction
from prefix_registry.serving.guards import KeyRateLimit, RequestIdOwners
from prefix_registry.serving.http import HTTPError
from prefix_registry.serving.metrics import ServingMetrics
from prefix_registry.serving.schemas import ERRORS
from prefix_registry.serving.table import ServingTable, UnknownTask
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.traffic.prediction_records import (
    PredictionLogError,
    PredictionRecord,
)

if TYPE_CHECKING:
    from prefix_registry.serving.app import ServingLimits

# The scores a generation's log row carries beside its output length (words).
NEW_TOKENS = "new_tokens"
TRUNCATED = "truncated"  # 1.0 when the output stopped at its token budget, not at its end-of-turn token
GENERATE = "generate"  # the endpoint label of the request counter


def _unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


class GenerateRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    task: str = Field(max_length=64, description="A generation task whose serving version writes the outputs.")
    inputs: list[str] = Field(description="Texts to write from (each read with the version's instruction).")
    max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        description="At most this many new tokens per input (default: the version's own; the server bounds it).",
    )
    do_sample: bool = Field(default=False, description="Sample from the distribution instead of greedy decoding.")
    seed: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="With do_sample: the same seed gives the same text per input."
    )

    _check_task = field_validator("task")(_unicode)

    @field_validator("inputs")
    @classmethod
    def _check_inputs(cls, inputs: list[str]) -> list[str]:
        for i, text in enumerate(inputs):
            try:
                _unicode(text)
            except ValueError as error:
                raise ValueError(f"inputs[{i}] {error}") from None
        return inputs


class Generation(BaseModel):
    prediction_id: str = Field(description="Id to send a reference text for this output with.")
    text: str = Field(description="The generated text (special tokens dropped, stripped).")
    new_tokens: int = Field(description="Tokens written (the end-of-turn token not counted).")
    truncated: bool = Field(description="True when the output stopped at max_new_tokens, not at its end.")
    version: str = Field(description="The version that wrote it.")


class GenerateResponse(BaseModel):
    task: str
    version: str = Field(description="The version serving the task when the request was answered.")
    request_id: str = Field(description="The client's X-Request-Id when it looks like an id, else a new one.")
    max_new_tokens: int = Field(description="The token budget each input had.")
    generations: list[Generation] = Field(description="One per input, in the request's order.")


class GenerateFeedbackRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    prediction_id: str = Field(max_length=64, description="The id returned with a generation.")
    reference: str = Field(min_length=1, max_length=20_000, description="What the output should have been.")
    correction: bool = Field(default=False, description="Replace a reference given before (the old one is kept).")

    _check_strings = field_validator("prediction_id", "reference")(_unicode)


class GenerateFeedbackResponse(BaseModel):
    prediction_id: str
    task: str
    version: str = Field(description="The version that wrote the output.")
    reference: str
    generated: str = Field(description="The output the reference is for.")
    rougeL: float = Field(description="ROUGE-L F-measure of the output against the reference.")


@dataclass(frozen=True)
class GenerateRoutes:
    """What the generation routes share with the rest of the server (serving/app.py builds it)."""

    table: ServingTable
    batcher: Batcher  # its own, running `generate_rows`: decoding steps never share a batch with classifier rows
    keys: KeyGate
    limits: ServingLimits
    metrics: ServingMetrics
    request_ids: RequestIdOwners
    request_id_pattern: re.Pattern[str]  # what a client's X-Request-Id must look like to be kept (as /v1/predict)
    prediction_log: PredictionLog | None = None
    durable_log: bool = True
    predict_rate: KeyRateLimit | None = None
    feedback_rate: KeyRateLimit | None = None


def add_generate_routes(app: FastAPI, routes: GenerateRoutes) -> None:
    """Register /v1/generate and /v1/generate/feedback on `app`."""
    table, keys, limits, metrics = routes.table, routes.keys, routes.limits, routes.metrics

    def task_label(task: str) -> str:
        return task if task in table.served() else "unknown"

    def admit(body: GenerateRequest, request: Request) -> tuple[AttachedPrefix, str | None, str]:
        """The version that writes (with this request's decoding options), the caller's key name and request id."""
        try:
            key = keys.require(request.headers.get("authorization"), "predict", body.task)
            if routes.predict_rate is not None:
                routes.predict_rate.take(key.name if key is not None else None)
            _check_inputs(body.inputs, limits)
            attached = table.current(body.task)
            if attached.generation is None:
                raise HTTPError(
                    422, f"task {body.task!r} is a {attached.kind.name} task: expected a generation task, send it to "
                    "/v1/predict",
                )  # fmt: skip
            options = _options(body, attached.generation, limits.max_new_tokens)
        except HTTPError as error:
            metrics.requests.labels(GENERATE, task_label(body.task), str(error.status)).inc()
            raise
        except UnknownTask as error:
            metrics.requests.labels(GENERATE, "unknown", "404").inc()
            raise HTTPError(404, str(error)) from None
        key_name = key.name if key is not None else None
        client_id = request.headers.get("x-request-id") or ""
        claimed = routes.request_id_pattern.fullmatch(client_id) and routes.request_ids.claim(client_id, key_name)
        return attached.with_options(options), key_name, client_id if claimed else uuid.uuid4().hex

    def answer(
        body: GenerateRequest,
        attached: AttachedPrefix,
        key_name: str | None,
        request_id: str,
        outputs: list[torch.Tensor],
        latency_ms: float,
    ) -> dict[str, Any]:
        records, generations = [], []
        for text, tokens in zip(body.inputs, outputs, strict=True):
            written, cut = decode(attached, tokens), truncated(attached, tokens)
            scores = {
                **attached.kind.logged_prediction(_texts([written]), attached.labels).scores,
                NEW_TOKENS: float(tokens.numel()),
                TRUNCATED: float(cut),
            }
            record = PredictionRecord.new(
                body.task,
                attached.version,
                text,
                written,
                scores,
                request_id=request_id,
                key_name=key_name,
                latency_ms=latency_ms,
            )
            records.append(record)
            generations.append(
                {
                    "prediction_id": record.prediction_id,
                    "text": written,
                    "new_tokens": int(tokens.numel()),
                    "truncated": cut,
                    "version": attached.version,
                }
            )
        log = routes.prediction_log
        if log is not None:
            try:
                log.commit(records) if routes.durable_log else log.enqueue(records)
            except PredictionLogError as error:
                metrics.requests.labels(GENERATE, body.task, "503").inc()
                raise HTTPError(503, f"generation not logged, so not answered; retry: {error}") from None
            metrics.log_pending.set(log.pending)
        metrics.requests.labels(GENERATE, body.task, "200").inc()
        metrics.predictions.labels(body.task, attached.version).inc(len(records))
        options = attached.generation
        return {
            "task": body.task,
            "version": attached.version,
            "request_id": request_id,
            "max_new_tokens": options.max_new_tokens if options else 0,
            "generations": generations,
        }

    @app.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS)
    async def generate(body: GenerateRequest, request: Request) -> dict[str, Any]:
        attached, key_name, request_id = await run_in_threadpool(admit, body, request)
        started = time.perf_counter()
        try:
            outputs = await routes.batcher.submit(attached, body.inputs)
        except BatchRejected as error:
            metrics.requests.labels(GENERATE, body.task, "503").inc()
            raise HTTPError(503, str(error), {"Retry-After": str(error.retry_after)}) from None
        except BatchFailed as error:
            metrics.requests.labels(GENERATE, body.task, "500").inc()
            raise HTTPError(500, str(error)) from None
        latency_ms = (time.perf_counter() - started) * 1000
        return await run_in_threadpool(answer, body, attached, key_name, request_id, outputs, latency_ms)

    @app.post("/v1/generate/feedback", response_model=GenerateFeedbackResponse, responses=ERRORS)
    def generate_feedback(body: GenerateFeedbackRequest, request: Request) -> dict[str, Any]:
        authorization = request.headers.get("authorization")
        found = find_prediction(keys, routes.feedback_rate, routes.prediction_log, authorization, body.prediction_id)
        record = found.record
        if TRUNCATED not in record.probabilities:
            raise HTTPError(
                422, f"prediction {body.prediction_id!r} is a label of task {record.task!r}, not a generation: "
                "send its label to /v1/feedback",
            )  # fmt: skip
        attach(found, body.reference, body.correction)
        metrics.feedback.labels(task_label(record.task)).inc()
        return {
            "prediction_id": body.prediction_id,
            "task": record.task,
            "version": record.version,
            "reference": body.reference,
            "generated": record.predicted_label,
            "rougeL": rouge_scores([body.reference], [record.predicted_label])[ROUGE_L],
        }


def _texts(texts: list[str]) -> np.ndarray:
    return np.asarray(texts, dtype=object)


def _options(body: GenerateRequest, defaults: GenerationOptions, limit: int) -> GenerationOptions:
    """The request's decoding options: its budget (default: the version's), bounded by the server's `limit`."""
    budget = body.max_new_tokens if body.max_new_tokens is not None else min(defaults.max_new_tokens, limit)
    if budget > limit:
        raise HTTPError(422, f"max_new_tokens: expected at most {limit} (this server's bound), got {budget}")
    return GenerationOptions(max_new_tokens=budget, do_sample=body.do_sample, seed=body.seed)


def _check_inputs(inputs: list[str], limits: ServingLimits) -> None:
    if not inputs:
        raise HTTPError(422, "inputs must hold at least one text")
    if len(inputs) > limits.max_texts:
        raise HTTPError(413, f"{len(inputs)} inputs in one request; at most {limits.max_texts} are accepted")
    for i, text in enumerate(inputs):
        if not text.strip():
            raise HTTPError(422, f"inputs[{i}] is empty")
        if len(text) > limits.max_chars:
            raise HTTPError(413, f"inputs[{i}] has {len(text)} characters; at most {limits.max_chars} are accepted")
