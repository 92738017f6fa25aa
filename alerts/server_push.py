"""Alias moves pushed to every running server: an alias observer that POSTs a signed notice, in parallel.

    AliasMover --AliasChange--> AliasPush --POST /internal/alias-moved (signed)--> each live server in the directory
                                                                                     --> table.refresh([task])

The notice is a hint, not a command: it names the task and the move, and a server that accepts it re-reads the
task's aliases from the registry, as its poll would. So a forged or replayed notice can at most make a server read
the registry early; it can never point a server at a version the registry does not name. It is still signed
(HMAC-SHA256 over timestamp and body, signing.py), and servers refuse an unsigned, wrongly signed or stale one.

Every move of every alias is pushed (`champion`, `challenger`, any other): a server decides what concerns it. A
server that does not answer within `push_timeout_s` is logged and left to its poll; nothing here ever fails the move.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from prefix_registry.alerts.server_directory import RegisteredServer, ServerDirectory
from prefix_registry.alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from prefix_registry.errors import first_line
from prefix_registry.registry.store import AliasChange
from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

PUSH_PATH = "/internal/alias-moved"
MAX_PARALLEL_PUSHES = 32


@dataclass(frozen=True)
class PushResult:
    """One server's answer to one push: its HTTP status (None when it was not reached) or the error."""

    url: str
    status: int | None
    seconds: float
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status == 200


def push_body(change: AliasChange) -> bytes:
    """The notice of `change` as sent: compact JSON of the move (task, alias, versions, action, sequence)."""
    return json.dumps(
        {
            "task": change.task,
            "alias": change.alias,
            "from_version": change.from_version,
            "to_version": change.to_version,
            "action": change.event.action,
            "sequence": change.event.sequence,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers of a push of `body`: content type, timestamp and signature (signing.py's scheme)."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


class AliasPush:
    """An alias observer that pushes each move to the live servers of the directory, in parallel.

    Args:
        settings: `push_timeout_s`, `server_push` and where the directory lives.
        directory: the server directory (default: opened from `settings` at the first move).

    Attributes:
        results: the results of the latest push, by URL (for tests, the benchmark and the CLI's log).
        listeners: called with each push's results (e.g. a benchmark timing the swap).
    """

    def __init__(self, settings: Settings, directory: ServerDirectory | None = None) -> None:
        self.settings = settings
        self._directory = directory
        self.results: list[PushResult] = []
        self.listeners: list[Callable[[AliasChange, list[PushResult]], None]] = []

    def __call__(self, change: AliasChange) -> None:
        self.results = self.notify(change.task, push_body(change), f"{change.alias} -> {change.to_version}")
        for listener in self.listeners:
            listener(change, self.results)

    def notify(self, task: str, body: bytes, what: str) -> list[PushResult]:
        """Push `body` (JSON naming `task`) to every live server that follows `task`; never raises.

        The alias moves' own entry point is `__call__`; whatever else changes what a server serves for a task (a
        rollout's state, say) may tell the servers through this one: they re-read the task either way.
        """
        if not self.settings.server_push:
            return []
        try:
            directory = self._directory or ServerDirectory.from_settings(self.settings)
            self._directory = directory
            directory.prune()
            servers = [server for server in directory.live() if server.follows(task)]
            if not servers:
                return []
            secret = directory.secret()
        except Exception as error:  # the change is made: a push is never worth failing it
            logger.warning("%s: %s made, but no server was told (server directory): %s", task, what, error)
            return []
        results = self.push(servers, body, secret)
        for result in results:
            if not result.delivered:
                logger.warning(
                    "%s: push of %s to %s failed (%s); that server catches up at its next poll",
                    task,
                    what,
                    result.url,
                    result.error or f"HTTP {result.status}",
                )
        return results

    def push(self, servers: list[RegisteredServer], body: bytes, secret: str) -> list[PushResult]:
        """POST `body`, signed with `secret`, to every server at once; returns when all answered or timed out."""
        headers = signed_headers(secret, body)
        timeout = httpx.Timeout(self.settings.push_timeout_s)

        def one(server: RegisteredServer) -> PushResult:
            started = time.perf_counter()
            try:
                # trust_env=False: servers are reached directly, never through a proxy from the environment.
                with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
                    response = client.post(server.url + PUSH_PATH, content=body, headers=headers)
                error = None if response.status_code == 200 else _reason(response)
                return PushResult(server.url, response.status_code, time.perf_counter() - started, error)
            except httpx.HTTPError as failure:
                return PushResult(server.url, None, time.perf_counter() - started, first_line(failure) or repr(failure))

        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_PUSHES, len(servers)), thread_name_prefix="push") as pool:
            return list(pool.map(one, servers))


def _reason(response: httpx.Response) -> str:
    try:
        payload: Any = response.json()
        return str(payload.get("error", payload))[:200]
    except ValueError:
        return response.text[:200]
