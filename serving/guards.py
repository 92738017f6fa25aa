"""Limits that hold whatever a client sends: body size counted as it streams, and request rates per key."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import Any

from prefix_registry.serving.http import HTTPError, error_response


class BodySizeLimit:
    """ASGI middleware: reads the body up to `max_bytes`, counting bytes as they arrive (chunked uploads carry no
    Content-Length), and answers 413 as soon as the count passes the limit. The app then reads the buffered body.
    Memory per request is therefore bounded by `max_bytes`, whatever the client claims or sends."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, f"request body of {int(declared)} bytes exceeds {self.max_bytes}")
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._refuse(scope, receive, send, f"request body exceeds {self.max_bytes} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        buffered = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        chunks.clear()
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return buffered
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: dict[str, Any], receive: Any, send: Any, message: str) -> None:
        response = error_response(413, message, {"Connection": "close"})
        await response(scope, receive, send)


class KeyRateLimit:
    """A token bucket per API key name (None: the anonymous client): `per_minute` requests, bursts of `burst`.

    `what` names the limited thing in the 429's message ("feedback", "prediction").
    """

    def __init__(self, per_minute: float, burst: int, what: str = "feedback") -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError(f"expected a rate above 0 per minute and a burst of at least 1, got {per_minute}, {burst}")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.what = what
        self._buckets: dict[str | None, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key_name: str | None) -> None:
        """Spend one token of `key_name`'s bucket, or raise HTTPError 429 saying when to retry."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key_name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                wait = (1.0 - tokens) / self.rate
                self._buckets[key_name] = (tokens, now)
                raise HTTPError(
                    429,
                    f"{self.what} rate limit of {self.rate * 60:g}/min reached for "
                    f"{'key ' + repr(key_name) if key_name else 'the anonymous client'}; retry in {wait:.1f}s",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
            self._buckets[key_name] = (tokens - 1.0, now)


class RequestIdOwners:
    """Which API key first used each client-chosen request id, so that no key can log under another key's id.

    Remembers the newest `capacity` ids (older ones are forgotten, oldest first); in memory, per server process.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._owners: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, request_id: str, key_name: str | None) -> bool:
        """True when `key_name` may use `request_id` (unused yet, or used by this same key before)."""
        with self._lock:
            if request_id in self._owners:
                return self._owners[request_id] == key_name
            self._owners[request_id] = key_name
            if len(self._owners) > self.capacity:
                self._owners.popitem(last=False)
            return True
