"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 in a thread that records what it is sent.

    with WebhookReceiver(secret="s3cret") as receiver:
        receiver.fail_next(2)          # the next two requests get HTTP 500
        receiver.delay = 1.5           # later responses wait 1.5 s (the request is recorded at once)
        ...post to receiver.url...
        receiver.requests[0].json(), receiver.requests[0].signature_valid

Signatures are checked with `monitoring.alerts.verify_signature`, as a real receiver would.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prefix_registry.alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from prefix_registry.flows.loopback import HOST


@dataclass
class ReceivedRequest:
    """One request as the receiver saw it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    signature_valid: bool | None  # None when the receiver has no secret

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name, or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)

    def json(self) -> Any:
        return json.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = dict(self.headers.items())
        status, delay = self.server.receiver._record(self.command, self.path, headers, body)
        if delay > 0:
            time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status < 300 else b"receiver told to fail")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout test); nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver


class WebhookReceiver:
    """Context manager: an HTTP server on 127.0.0.1 (`port=0`: any free port) recording every POST.

    Args:
        secret: when set, each request's `signature_valid` says whether its signature verified.
        port: a fixed port (to bring a receiver "back up" where a sender expects it), or 0.
        delay: seconds to wait before answering (the request is recorded before the wait).
        reject_invalid_signatures: answer 401 to requests whose signature does not verify.
    """

    def __init__(
        self,
        secret: str | None = None,
        port: int = 0,
        delay: float = 0.0,
        reject_invalid_signatures: bool = False,
    ) -> None:
        self.secret = secret
        self.delay = delay
        self.reject_invalid_signatures = reject_invalid_signatures
        self._requested_port = port
        self._requests: list[ReceivedRequest] = []
        self._failures_left = 0
        self._failure_status = 500
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> WebhookReceiver:
        server = _Server((HOST, self._requested_port), _Handler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what tests use --------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the receiver is not running: use it as a context manager or call start()")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`; append any path, it is recorded."""
        return f"http://{HOST}:{self.port}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A copy of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next `count` requests with `status` (default 500) instead of 200."""
        with self._lock:
            self._failures_left = count
            self._failure_status = status

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least `count` requests arrived (True) or `timeout` passed (False)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self._requests) >= count, timeout)

    # -- server side -----------------------------------------------------------------------------------------
    def _verify(self, headers: dict[str, str], body: bytes) -> bool | None:
        if self.secret is None:
            return None
        lowered = {key.lower(): value for key, value in headers.items()}
        return verify_signature(
            self.secret,
            lowered.get(TIMESTAMP_HEADER.lower(), ""),
            body,
            lowered.get(SIGNATURE_HEADER.lower()),
        )

    def _record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, float]:
        """Store one request; returns the status to answer and how long to wait first."""
        valid = self._verify(headers, body)
        with self._arrived:
            if self._failures_left > 0:
                self._failures_left -= 1
                status = self._failure_status
            elif self.reject_invalid_signatures and valid is False:
                status = 401
            else:
                status = 200
            self._requests.append(ReceivedRequest(method, path, headers, body, status, valid))
            self._arrived.notify_all()
            return status, self.delay
