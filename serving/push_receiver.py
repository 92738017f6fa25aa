"""The push receiver: a signed notice of an alias move makes the server re-read that task's aliases at once.

POST /internal/alias-moved     from the alias mover of any prefix-registry process (alerts/server_push.py), signed
                               with the push secret (X-Prefix-Registry-Timestamp / -Signature, alerts/signing.py)
POST /internal/mlflow-webhook  MLflow's own webhook (`model_version_alias.created` / `.deleted`, MLflow >= 3.3 on a
                               tracking server with a SQL store), signed by MLflow's scheme (X-MLflow-Signature)

A notice is a hint: the server answers it by `table.refresh([task])` (in a worker thread, off the event loop), which
reads the registry as the poll does, so a notice never decides which version serves. It is answered once the
refresh is done (200 with the swaps made), so the alias mover, which waits for its pushes, returns after the servers
swapped. Refused: 503 when this server has no push secret (pushes are off), 401 for a missing, wrong or stale
signature, 422 for a body that names no task. Neither route is in the OpenAPI schema: clients never call them, and
they need no API key (the signature is their credential).
"""

from __future__ import annotations

import json
import logging
import re
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool

from prefix_registry.alerts.server_push import PUSH_PATH
from prefix_registry.alerts.signing import (
    MLFLOW_DELIVERY_ID_HEADER,
    MLFLOW_SIGNATURE_HEADER,
    MLFLOW_TIMESTAMP_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_mlflow_signature,
    verify_signature,
)
from prefix_registry.errors import AliasNotSet, ConfigError, TaskNotFound, mask_credentials
from prefix_registry.registry.store import TASK_NAME, PrefixRegistry
from prefix_registry.serving.http import error_response
from prefix_registry.serving.table import ServingTable

logger = logging.getLogger(__name__)

MLFLOW_WEBHOOK_PATH = "/internal/mlflow-webhook"
MLFLOW_ALIAS_ENTITY = "model_version_alias"
MLFLOW_ALIAS_ACTIONS = frozenset({"created", "deleted"})
# A signed notice older (or further ahead) than this is refused: a captured one cannot be replayed later.
SIGNATURE_TOLERANCE_S = 60.0


class PushSource(StrEnum):
    """Who sent a notice."""

    PREFIX_REGISTRY = "prefix-registry"
    MLFLOW = "mlflow"


class Rejection(StrEnum):
    """Why a notice was refused."""

    DISABLED = "disabled"  # this server has no push secret
    BAD_SIGNATURE = "bad_signature"  # missing, wrong or stale
    MALFORMED = "malformed"  # no task named


class PushMetrics:
    """Counters of notices on the server's own Prometheus registry (shown on /metrics)."""

    def __init__(self, registry: Any) -> None:
        self.received = Counter(
            "prefix_pushes_received",
            "Signed alias-move notices accepted, by source (prefix-registry, mlflow).",
            ["source"],
            registry=registry,
        )
        self.swaps = Counter(
            "prefix_push_swaps",
            "Version swaps made at once on a notice (the rest happen at a poll), by source.",
            ["source"],
            registry=registry,
        )
        self.rejected = Counter(
            "prefix_push_rejected",
            "Notices refused, by source and reason (disabled, bad_signature, malformed).",
            ["source", "reason"],
            registry=registry,
        )


def install_push_receiver(app: FastAPI, secret: str | None) -> None:
    """Add the two routes to `app` (made by serving/app.py's `create_app`); `secret` None refuses every notice."""
    table: ServingTable = app.state.table
    metrics = PushMetrics(app.state.metrics.registry)
    app.state.push_metrics = metrics
    router = APIRouter(include_in_schema=False)

    def refused(source: PushSource, reason: Rejection, status: int, message: str) -> JSONResponse:
        metrics.rejected.labels(source.value, reason.value).inc()
        return error_response(status, message)

    async def follow(source: PushSource, task: str) -> JSONResponse:
        metrics.received.labels(source.value).inc()
        if table.pinned_tasks is not None and task not in table.pinned_tasks:
            return JSONResponse({"task": task, "swaps": [], "followed": False})
        try:
            swaps = await run_in_threadpool(table.refresh, [task])
        except (TaskNotFound, AliasNotSet) as error:
            # A move of another alias (e.g. the first challenger of a task with no champion yet): nothing to serve.
            return JSONResponse({"task": task, "swaps": [], "followed": False, "reason": str(error)})
        metrics.swaps.labels(source.value).inc(len(swaps))
        return JSONResponse(
            {
                "task": task,
                "swaps": [{"from": swap.from_version, "to": swap.to_version} for swap in swaps],
                "followed": True,
            }
        )

    @router.post(PUSH_PATH)
    async def alias_moved(request: Request) -> JSONResponse:
        source = PushSource.PREFIX_REGISTRY
        if secret is None:
            return refused(source, Rejection.DISABLED, 503, "alias pushes are not enabled on this server")
        body = await request.body()
        if not verify_signature(
            secret,
            request.headers.get(TIMESTAMP_HEADER, ""),
            body,
            request.headers.get(SIGNATURE_HEADER),
            tolerance_seconds=SIGNATURE_TOLERANCE_S,
        ):
            return refused(source, Rejection.BAD_SIGNATURE, 401, "missing, wrong or stale push signature")
        task = _task_of(body, lambda payload: payload.get("task"))
        if task is None:
            return refused(source, Rejection.MALFORMED, 422, "expected a JSON object naming a task, got none")
        return await follow(source, task)

    @router.post(MLFLOW_WEBHOOK_PATH)
    async def mlflow_webhook(request: Request) -> JSONResponse:
        source = PushSource.MLFLOW
        if secret is None:
            return refused(source, Rejection.DISABLED, 503, "alias pushes are not enabled on this server")
        body = await request.body()
        if not verify_mlflow_signature(
            secret,
            request.headers.get(MLFLOW_DELIVERY_ID_HEADER),
            request.headers.get(MLFLOW_TIMESTAMP_HEADER),
            body,
            request.headers.get(MLFLOW_SIGNATURE_HEADER),
            tolerance_seconds=SIGNATURE_TOLERANCE_S,
        ):
            return refused(source, Rejection.BAD_SIGNATURE, 401, "missing, wrong or stale MLflow webhook signature")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return refused(source, Rejection.MALFORMED, 422, "expected MLflow's webhook JSON object")
        if payload.get("entity") != MLFLOW_ALIAS_ENTITY or payload.get("action") not in MLFLOW_ALIAS_ACTIONS:
            # Another event this webhook was subscribed to (or MLflow's test event): acknowledged, nothing to do.
            return JSONResponse({"followed": False, "event": f"{payload.get('entity')}.{payload.get('action')}"})
        task = _task_of(body, lambda found: (found.get("data") or {}).get("name"))
        if task is None:
            return refused(source, Rejection.MALFORMED, 422, "expected data.name to name a task, got none")
        return await follow(source, task)

    app.include_router(router)


def _task_of(body: bytes, pick: Any) -> str | None:
    """The task named in a JSON body by `pick`, when it is a valid task name; else None."""
    try:
        payload = json.loads(body)
        task = pick(payload) if isinstance(payload, dict) else None
    except (ValueError, AttributeError):
        return None
    return task if isinstance(task, str) and TASK_NAME.fullmatch(task) else None


class MlflowAliasWebhook:
    """MLflow's alias webhook for this server: registered at start (`prefixctl serve --mlflow-webhook`), deleted on
    a clean stop. MLflow delivers webhooks only from a tracking server (`mlflow server`) with a SQL store; to reach
    a loopback or private server it needs MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true and, for http,
    MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https (set on the tracking server)."""

    EVENTS = ("model_version_alias.created", "model_version_alias.deleted")

    def __init__(self, registry: PrefixRegistry, server_url: str, server_id: str, secret: str) -> None:
        tracking_uri = registry.settings.resolved_tracking_uri
        if not tracking_uri.startswith(("http://", "https://")):
            raise ConfigError(
                f"--mlflow-webhook needs an MLflow tracking server (MLFLOW_TRACKING_URI=http://...): MLflow sends "
                f"webhooks from its server only; got {mask_credentials(tracking_uri)!r}"
            )
        self.registry = registry
        self.url = server_url.rstrip("/") + MLFLOW_WEBHOOK_PATH
        # MLflow's rule: letters, digits, '.', '_', '-', starting and ending with a letter or digit.
        self.name = re.sub(r"[^A-Za-z0-9._-]", "-", f"prefix-registry-serve-{server_id[:12]}").rstrip("._-")
        self.secret = secret
        self.webhook_id: str | None = None

    def register(self) -> str:
        self.webhook_id = self.registry.gateway.create_webhook(
            self.name,
            self.url,
            list(self.EVENTS),
            self.secret,
            description="prefix-registry: tells this server of every alias move (deleted when it stops cleanly)",
        )
        return self.webhook_id

    def delete(self) -> None:
        if self.webhook_id is None:
            return
        try:
            self.registry.gateway.delete_webhook(self.webhook_id)
        except Exception as error:
            logger.warning("could not delete the MLflow webhook %s: %s", self.name, error)
        self.webhook_id = None
