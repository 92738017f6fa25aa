"""`prefixctl serve`: the HTTP prediction server."""

from __future__ import annotations

import ipaddress
import signal
import sys
from typing import Annotated

import typer

from prefix_registry.cli.app import open_registry
from prefix_registry.cli.output import error_console
from prefix_registry.config_values import field_default, field_help
from prefix_registry.errors import PrefixRegistryError
from prefix_registry.settings import Settings


def _setting(name: str) -> str:
    """An option's help: the setting's description, its default and its environment variable."""
    return f"{field_help(Settings, name)} Default: {field_default(Settings, name)} (PREFIX_REGISTRY_{name.upper()})."


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    task: Annotated[list[str] | None, typer.Option("--task", help="Serve only these tasks (repeatable).")] = None,
    alias: Annotated[str, typer.Option(help="Alias whose version serves each task.")] = "champion",
    poll_interval: Annotated[float | None, typer.Option(help=_setting("poll_interval_s"))] = None,
    max_texts: Annotated[int, typer.Option(help="Most texts accepted in one request.")] = 64,
    max_chars: Annotated[int, typer.Option(help="Most characters accepted in one text.")] = 20_000,
    log: Annotated[bool, typer.Option(help="Write every prediction to the prediction log.")] = True,
    rate_limit: Annotated[
        float | None,
        typer.Option(
            help="Prediction requests per minute per API key (429 with Retry-After beyond it); default: the "
            "settings' predict_per_minute (PREFIX_REGISTRY_PREDICT_PER_MINUTE), else no limit."
        ),
    ] = None,
    rate_burst: Annotated[
        int | None,
        typer.Option(help="Prediction requests one key may send at once (default: the settings' predict_burst)."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="Serve a non-loopback address although no API key exists (anyone may call).")
    ] = False,
    # Cross-request batching; unset options take the settings (PREFIX_REGISTRY_MAX_BATCH, ...).
    max_batch: Annotated[int | None, typer.Option(help=_setting("max_batch"))] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help=_setting("max_wait_ms"))] = None,
    max_queue_rows: Annotated[int | None, typer.Option(help=_setting("max_queue_rows"))] = None,
    predict_timeout_s: Annotated[float | None, typer.Option(help=_setting("predict_timeout_s"))] = None,
    # Low-precision backbone (issue 20); unset: the settings' serving_precision.
    precision: Annotated[str | None, typer.Option(help=_setting("serving_precision"))] = None,
    # Pushed alias moves (issue 21).
    advertise_url: Annotated[
        str | None,
        typer.Option(
            help="URL at which promoting processes reach this server to push alias moves; default: "
            "http://HOST:PORT (the machine's host name when HOST binds every interface)."
        ),
    ] = None,
    mlflow_webhook: Annotated[
        bool,
        typer.Option(
            help="Also register an MLflow webhook (model_version_alias.created/.deleted) that tells this server of "
            "alias moves made by any MLflow client; needs a tracking server (MLflow >= 3.3, SQL store) started with "
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true and MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https for a private "
            "http URL. Deleted on a clean stop."
        ),
    ] = False,
) -> None:
    """Serve every task's champion over HTTP, following alias moves without restarting.

    Alias moves are pushed to the server at once (it registers itself in the server directory; see
    PREFIX_REGISTRY_SERVER_PUSH), and polled every --poll-interval seconds as a fallback. Once an API key exists
    (`prefixctl keys create`), every request but /healthz needs one.
    """
    import uvicorn

    from prefix_registry.alerts.server_directory import ServerDirectory, ServerDirectoryError
    from prefix_registry.inference.precision import parse_precision
    from prefix_registry.serving.app import ServingLimits
    from prefix_registry.serving.batcher import BatchingConfig
    from prefix_registry.serving.factory import build_serving_app
    from prefix_registry.serving.http_server import ConnectionBounds, server_config
    from prefix_registry.serving.presence import ServerPresence
    from prefix_registry.serving.push_receiver import MlflowAliasWebhook
    from prefix_registry.traffic.api_keys import ApiKeyStore
    from prefix_registry.traffic.prediction_log import PredictionLog

    settings = Settings()
    batching = BatchingConfig(
        max_batch=settings.max_batch if max_batch is None else max_batch,
        max_wait_ms=settings.max_wait_ms if max_wait_ms is None else max_wait_ms,
        max_queue_rows=settings.max_queue_rows if max_queue_rows is None else max_queue_rows,
        timeout_s=settings.predict_timeout_s if predict_timeout_s is None else predict_timeout_s,
    )
    chosen_precision = parse_precision(precision or settings.serving_precision)  # a typo stops here, before loading
    api_keys = ApiKeyStore.from_settings(settings)
    if not is_loopback(host) and not api_keys.any_exist() and not insecure:
        api_keys.close()
        raise PrefixRegistryError(
            f"refusing to serve {host} without API keys: expected a loopback address (127.0.0.1, ::1) or a key "
            "(prefixctl keys create NAME --scopes predict,feedback), got none; --insecure serves anyone"
        )
    if not is_loopback(host) and insecure and not api_keys.any_exist():
        error_console.print(
            f"warning: serving {host} without API keys (--insecure): anyone who reaches it may predict and label",
            highlight=False,
        )
    if mlflow_webhook and not settings.server_push:
        raise PrefixRegistryError(
            "--mlflow-webhook needs pushes on: expected PREFIX_REGISTRY_SERVER_PUSH true, got false"
        )
    # The directory holds the push secret; without it the receiver refuses every notice and polling alone follows.
    directory, push_secret = None, None
    if settings.server_push:
        try:
            directory = ServerDirectory.from_settings(settings)
            push_secret = directory.secret()
        except ServerDirectoryError as error:
            if mlflow_webhook:
                raise
            directory = None
            error_console.print(f"warning: alias moves will not be pushed (polling only): {error}", highlight=False)
    registry = open_registry()
    prediction_log = PredictionLog.from_settings(settings) if log else None
    try:
        app_ = build_serving_app(
            registry,
            tasks=task,
            alias=alias,
            prediction_log=prediction_log,
            limits=ServingLimits(
                max_texts=max_texts,
                max_chars=max_chars,
                feedback_per_minute=settings.feedback_per_minute,
                feedback_burst=settings.feedback_burst,
                predict_per_minute=rate_limit if rate_limit is not None else settings.predict_per_minute,
                predict_burst=rate_burst if rate_burst is not None else settings.predict_burst,
            ),
            watch_interval=settings.poll_interval_s if poll_interval is None else poll_interval,
            api_keys=api_keys,
            durable_log=settings.durable_log,
            key_store_grace_s=settings.api_keys_grace_s,
            batching=batching,
            precision=chosen_precision,
            push_secret=push_secret,
        )
    except BaseException:
        if prediction_log is not None:
            prediction_log.close()
        raise
    served = app_.state.table.served()
    error_console.print(f"serving {', '.join(served) or 'no task yet'} on http://{host}:{port}", highlight=False)
    url = advertise_url or default_url(host, port)
    interval = settings.poll_interval_s if poll_interval is None else poll_interval
    following = f"alias moves pushed to {url}" if directory is not None else "alias move pushes off"
    error_console.print(f"{following}; the registry polled every {interval:g} s", highlight=False)
    # uvicorn re-raises SIGTERM after its graceful shutdown (log flushed); such a stop exits 0, not 143.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    bounds = ConnectionBounds(
        max_header_bytes=settings.max_header_bytes,
        request_timeout_s=settings.request_timeout_s,
        max_connections=settings.max_connections,
    )
    server = uvicorn.Server(server_config(app_, host, port, bounds, log_level="warning"))
    presence = (
        ServerPresence(directory, url, task, alias, settings.server_heartbeat_s) if directory is not None else None
    )
    webhook = None
    if presence is not None and push_secret is not None and mlflow_webhook:
        webhook = MlflowAliasWebhook(registry, url, presence.server_id, push_secret)
        webhook.register()
        error_console.print(f"MLflow webhook {webhook.name} -> {webhook.url}", highlight=False)
    if presence is not None:
        presence.start(ready=lambda: server.started)  # registered once uvicorn accepts connections
    try:
        server.run()
    finally:
        if presence is not None:
            presence.stop()
        if webhook is not None:
            webhook.delete()


def default_url(host: str, port: int) -> str:
    """Where other processes reach a server bound to `host`: the host itself, or this machine's name for a
    wildcard address (0.0.0.0, ::)."""
    import socket

    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface
