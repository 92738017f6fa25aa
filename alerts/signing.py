"""Signing of alert requests (HMAC-SHA256 over timestamp and body), and its check, which receivers can import;
also the check of MLflow's own webhook signature (servers accept MLflow's alias webhooks, serving/push_receiver.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Prefix-Registry-Timestamp"
SIGNATURE_HEADER = "X-Prefix-Registry-Signature"
# MLflow's webhook headers (mlflow/webhooks/constants.py, MLflow >= 3.3; a Standard Webhooks-like scheme).
MLFLOW_SIGNATURE_HEADER = "X-MLflow-Signature"
MLFLOW_TIMESTAMP_HEADER = "X-MLflow-Timestamp"
MLFLOW_DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 with `secret` of `f"{timestamp}.".encode() + body`."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    header: str | None,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """For receivers: True when `header` is the signature of `body` at `timestamp`, made within tolerance.

    Args:
        secret: the shared secret.
        timestamp: the `X-Prefix-Registry-Timestamp` header (unix seconds).
        body: the raw request body, exactly as received.
        header: the `X-Prefix-Registry-Signature` header (`sha256=<hex>`).
        tolerance_seconds: how far the timestamp may be from `now` (rejects replays of old requests).
        now: the current unix time (for tests); default: `time.time()`.
    Returns:
        False on any mismatch, stale or malformed timestamp, or missing header; never raises.
    """
    if not header or not timestamp:
        return False
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, str(timestamp), body).encode(), header.strip().encode())


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64>`: MLflow's webhook signature, HMAC-SHA256 with `secret` of `f"{delivery_id}.{timestamp}."` + body.

    MLflow signs the JSON text it sends, and sends that text as UTF-8: so the raw body is what is signed.
    """
    digest = hmac.new(secret.encode("utf-8"), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_mlflow_signature(
    secret: str,
    delivery_id: str | None,
    timestamp: str | None,
    body: bytes,
    header: str | None,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """True when `header` (X-MLflow-Signature) is MLflow's signature of `body` for this delivery id and timestamp
    (X-MLflow-Delivery-Id, X-MLflow-Timestamp), made within `tolerance_seconds` of `now`; never raises."""
    if not header or not timestamp or not delivery_id:
        return False
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        return False
    expected = mlflow_signature(secret, delivery_id, str(timestamp), body)
    # Standard Webhooks allows several space-separated signatures (a key rotation); MLflow sends one.
    return any(hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in header.split())
