"""A local webhook receiver that checks signatures and prints alerts: where the demo's alerts arrive."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prefix_registry.alerts import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


class AlertInbox:
    """HTTP server on 127.0.0.1 that records each alert posted to it (and whether its signature verified)."""

    def __init__(self, secret: str | None = None, on_alert: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.secret = secret
        self.on_alert = on_alert
        self.alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                valid = None
                if inbox.secret is not None:
                    valid = verify_signature(
                        inbox.secret,
                        self.headers.get(TIMESTAMP_HEADER, ""),
                        body,
                        self.headers.get(SIGNATURE_HEADER, ""),
                    )
                try:
                    payload = json.loads(body)
                except json.JSONDecodeError:
                    payload = {"raw": body.decode("utf-8", "replace")}
                record = {**payload, "signature_valid": valid}
                with inbox._lock:
                    inbox.alerts.append(record)
                if inbox.on_alert is not None:
                    inbox.on_alert(record)
                self.send_response(204 if valid is not False else 401)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-inbox", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def start(self) -> AlertInbox:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> AlertInbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
