"""Build a ready server: check the registry, load every task's serving version, then create the app."""

from __future__ import annotations

import os

from fastapi import FastAPI

from prefix_registry.inference.precision import Precision, parse_precision
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.registry.aliases import CHAMPION
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.serving.app import ServingLimits, create_app
from prefix_registry.serving.auth import KeyGate
from prefix_registry.serving.batcher import BatchingConfig
from prefix_registry.serving.push_receiver import install_push_receiver
from prefix_registry.serving.table import ServingTable
from prefix_registry.traffic.api_keys import ApiKeyStore
from prefix_registry.traffic.prediction_log import PredictionLog


def build_serving_app(
    registry: PrefixRegistry,
    tasks: list[str] | None = None,
    alias: str = CHAMPION,
    prediction_log: PredictionLog | None = None,
    limits: ServingLimits | None = None,
    watch_interval: float | None = 5.0,
    api_keys: ApiKeyStore | None = None,
    durable_log: bool = True,
    key_store_grace_s: float = 30.0,
    batching: BatchingConfig | None = None,
    precision: Precision | None = None,
    push_secret: str | None = None,
) -> FastAPI:
    """Load the serving versions and return the app.

    `api_keys`: the key store the server checks (None: anonymous clients only, for in-process use and the demo).
    `durable_log`: answer a prediction only once its log row is committed.
    `key_store_grace_s`: how long the keys read before are trusted while the key store is unreadable.
    `batching`: how concurrent requests share forward passes (default `BatchingConfig()`).
    `precision`: what versions serve at (default: the settings' serving_precision); below fp32 only once a version
        passed its check on its own test split (registry/precision_check.py).
    `push_secret`: the secret that signs alias-move notices (serving/push_receiver.py); None refuses them all.

    Raises RegistryUnavailable (a one-line error) when the registry cannot be reached: a server that starts without
    it would have nothing to serve. Later outages only pause alias following.
    """
    # A serving process must notice a registry outage in seconds, not retry for minutes while holding the refresh
    # loop: MLflow takes these bounds from the environment only, so they are set for this process (unless given).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    registry.ping()
    settings = registry.settings
    table = ServingTable(
        registry,
        PrefixPool(settings.resolved_cache_dir),
        alias=alias,
        tasks=tasks,
        precision=precision or parse_precision(settings.serving_precision),
        tolerance_points=settings.precision_tolerance_points,
    )
    table.refresh(strict=tasks is not None)
    app = create_app(
        table,
        prediction_log=prediction_log,
        limits=limits,
        watch_interval=watch_interval,
        keys=KeyGate(api_keys, grace_seconds=key_store_grace_s),
        durable_log=durable_log,
        batching=batching,
    )
    install_push_receiver(app, push_secret)
    return app
