"""Errors of the services a command talks to (MLflow, S3, the databases, Prefect) that reach the entry point unwrapped.

The libraries translate the outages they foresee into `RegistryUnavailable`; anything else one of these services
raises (an MLflow error code nobody mapped, a refused connection in a code path that does not wrap it) is still the
state of a service, not a bug of prefixctl, and is printed as one line like the project's own errors.
"""

from __future__ import annotations

import sys

# (module, class, what the line says it was): checked through sys.modules, so nothing is imported to check an error:
# an error of a library that was never imported cannot have been raised by it.
SERVICE_ERRORS = (
    ("mlflow.exceptions", "MlflowException", "MLflow"),
    ("requests.exceptions", "ConnectionError", "connection failed"),
    ("requests.exceptions", "Timeout", "connection timed out"),
    ("httpx", "TransportError", "connection failed"),
    ("botocore.exceptions", "BotoCoreError", "S3"),
    ("botocore.exceptions", "ClientError", "S3"),
    ("sqlalchemy.exc", "OperationalError", "database"),
    ("builtins", "ConnectionError", "connection failed"),
)


def service_error_line(error: BaseException) -> str | None:
    """`what: first line of the message` when `error` comes from a service prefixctl talks to, else None (a bug).

    Example: MlflowException("API request to http://127.0.0.1:5000/... failed ...\\n...") gives
    "MLflow: API request to http://127.0.0.1:5000/... failed ...".
    """
    from prefix_registry.errors import first_line

    for module_name, class_name, what in SERVICE_ERRORS:
        module = sys.modules.get(module_name)
        kind = getattr(module, class_name, None) if module is not None else None
        if isinstance(kind, type) and isinstance(error, kind):
            return f"{what}: {first_line(error)}"
    return None
