"""Signing of alert requests (HMAC-SHA256 over timestamp and body), and its check, which receivers can import."""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Prefix-Registry-Timestamp"
SIGNATURE_HEADER = "X-Prefix-Registry-Signature"


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
