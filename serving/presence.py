"""A running server's entry in the server directory (alerts/server_directory.py): registered once it listens,
kept fresh by a heartbeat, deleted on a clean stop. Alias moves are pushed to the servers found there.

    presence = ServerPresence(directory, "http://127.0.0.1:8000", tasks=None, alias="champion", heartbeat_s=10)
    presence.start(ready=lambda: server.started)   # registers once `ready()` is true, then beats
    ...
    presence.stop()                                  # deregisters

A directory that cannot be reached never stops the server: the failure is logged, the next heartbeat registers
again, and meanwhile the server follows alias moves by polling.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from prefix_registry.alerts.server_directory import RegisteredServer, ServerDirectory

logger = logging.getLogger(__name__)


class ServerPresence:
    """Registers this process as a running server at `url` and keeps its entry alive until `stop()`.

    Attributes:
        server_id: random per process, so a restarted server is a new entry and a stale one is never revived.
        registered: whether the entry was written (the latest attempt succeeded).
    """

    def __init__(
        self,
        directory: ServerDirectory,
        url: str,
        tasks: list[str] | None,
        alias: str,
        heartbeat_s: float,
    ) -> None:
        self.directory = directory
        self.server_id = uuid.uuid4().hex
        self.url = url.rstrip("/")
        self.tasks = tuple(tasks) if tasks else None
        self.alias = alias
        self.heartbeat_s = heartbeat_s
        self.started_at = time.time()
        self.registered = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, ready: Callable[[], bool] | None = None) -> None:
        """Register (once `ready()` is true, e.g. when uvicorn accepts connections) and beat in a daemon thread."""
        self._thread = threading.Thread(target=self._run, args=(ready,), name="server-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and delete the entry (a failure is logged: the entry then goes stale and is pruned)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        try:
            self.directory.deregister(self.server_id)
        except Exception as error:
            logger.warning("could not deregister server %s: %s", self.url, error)
        self.registered = False

    def register(self) -> None:
        now = time.time()
        self.directory.register(
            RegisteredServer(self.server_id, self.url, self.tasks, self.alias, self.started_at, now)
        )
        self.registered = True
        logger.info("registered as %s (%s) for alias-move pushes", self.url, self.server_id)

    def _run(self, ready: Callable[[], bool] | None) -> None:
        while ready is not None and not ready():
            if self._stop.wait(0.02):
                return
        self._beat(first=True)
        while not self._stop.wait(self.heartbeat_s):
            self._beat(first=False)

    def _beat(self, first: bool) -> None:
        try:
            if first or not self.registered or not self.directory.heartbeat(self.server_id):
                self.register()  # first, after a failure, or pruned while this server could not beat
        except Exception as error:
            self.registered = False
            logger.warning("server directory unreachable, following alias moves by polling only: %s", error)
