"""The HTTP/1.1 server under `prefixctl serve`: uvicorn with h11, bounded in header size and in time per request.

uvicorn's default parser (httptools) accepts headers of any size, and neither parser bounds how long a client may
take to send a request: a 30 MB header passed the body cap, and connections that trickle bytes stayed open for good.
Here h11 refuses headers beyond `max_header_bytes` with 431, and a request whose headers and body are not all
received within `request_timeout_s` of its first byte (or of the connection, for one that sends nothing) is
answered 408 when nothing was answered yet, and closed. Idle keep-alive connections keep uvicorn's own timeout.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"


@dataclass(frozen=True)
class ConnectionBounds:
    """What connections may cost the server: header bytes and seconds to send one whole request (each), and how
    many connections and requests may be open at once (all together; beyond it uvicorn answers 503 at once)."""

    max_header_bytes: int = 64 * 1024
    request_timeout_s: float = 30.0
    max_connections: int = 1024


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a 431 for oversized headers and a deadline on receiving each request."""

    bounds = ConnectionBounds()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._arm_deadline()  # the first byte of a next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._cancel_deadline()  # the whole request is in (or the connection is done)

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.bounds.max_header_bytes:
            self._send_error(431, f"request headers exceed {self.bounds.max_header_bytes} bytes")
            return
        super().send_400_response(msg)

    def _send_error(self, status: int, message: str) -> None:
        body = json.dumps({"error": message, "status": status}).encode("ascii")
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.bounds.request_timeout_s, self._request_too_slow)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _request_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        # Nothing answered on this request yet: its headers are incomplete, or its handler still waits for the body.
        if self.conn.their_state is h11.IDLE or self.cycle is None or not self.cycle.response_started:
            message = b'{"error": "request not received in time", "status": 408}'
            self.transport.write(REQUEST_TIMEOUT + b"content-length: %d\r\n\r\n" % len(message) + message)
        self.transport.close()


def bounded_protocol(bounds: ConnectionBounds) -> type[BoundedH11Protocol]:
    """A protocol class for uvicorn's `http=` that applies `bounds`."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"bounds": bounds})


def server_config(app: Any, host: str, port: int, bounds: ConnectionBounds, **kwargs: Any) -> Any:
    """A uvicorn Config serving `app` with `bounds` (pass it to `uvicorn.Server`)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=bounded_protocol(bounds),
        h11_max_incomplete_event_size=bounds.max_header_bytes,
        limit_concurrency=bounds.max_connections,
        **kwargs,
    )
