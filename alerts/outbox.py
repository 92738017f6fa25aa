"""The durable outbox: one SQLite row per (alert, sink) until a sink has accepted it.

Rows are written before anything is posted, so an alert survives a receiver that is down or a process that dies.
A row is claimed with a lease while one thread delivers it, so a background delivery and a redelivery pass (or two
processes sharing the file) never post the same row twice at once; a lease left by a dead process expires.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefix_registry.alerts.model import Alert
from prefix_registry.alerts.sinks import encode_body, payload_for_sink, redact_url

OUTBOX_FILE = "alerts_outbox.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    task TEXT NOT NULL,
    sink TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    claimed_until REAL NOT NULL DEFAULT 0
)
"""
_COLUMNS = "id, alert_id, kind, task, sink, body, attempts, last_error, created_at, next_attempt_at"


@dataclass
class OutboxRow:
    """One alert's body for one sink, with its delivery attempts so far."""

    id: int
    alert_id: str
    kind: str
    task: str
    sink: str
    body: bytes
    attempts: int
    last_error: str | None
    created_at: float
    next_attempt_at: float

    def describe(self) -> dict[str, Any]:
        """What `prefixctl alerts pending` shows: the sink redacted, `next_attempt_at` in unix seconds."""
        return {
            "id": self.id,
            "alert_id": self.alert_id,
            "kind": self.kind,
            "task": self.task,
            "sink": redact_url(self.sink),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": datetime.fromtimestamp(self.created_at, UTC).isoformat(timespec="seconds"),
            "next_attempt_at": self.next_attempt_at,
        }


class AlertOutbox:
    """The SQLite file of undelivered rows (created with mode 0600: it holds the webhook URLs).

    Args:
        path: the SQLite file.
        lease_seconds: how long a claimed row stays reserved for the thread delivering it.
    """

    def __init__(self, path: Path, lease_seconds: float) -> None:
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(mode=0o600, exist_ok=True)
        with self._connect() as conn:
            conn.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short connection per operation: safe across threads, and other processes can share the file.
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as conn:
            yield conn

    def enqueue(self, alert: Alert, sinks: list[str]) -> list[OutboxRow]:
        """One row per sink, already claimed by the caller, who delivers them next."""
        now = time.time()
        claimed_until = now + self.lease_seconds
        rows = []
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            for sink in sinks:
                body = encode_body(payload_for_sink(alert, sink))
                cursor = conn.execute(
                    "INSERT INTO outbox (alert_id, kind, task, sink, body, created_at, next_attempt_at, "
                    "claimed_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (alert.alert_id, alert.kind, alert.task, sink, body, now, now, claimed_until),
                )
                rows.append(
                    OutboxRow(
                        cursor.lastrowid or 0, alert.alert_id, alert.kind, alert.task, sink, body, 0, None, now, now
                    )
                )
            conn.execute("COMMIT")
        return rows

    def claim_due(self, force: bool = False) -> list[OutboxRow]:
        """Claim the rows due now (every unclaimed row with `force`), oldest first."""
        now = time.time()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            due = "claimed_until <= ?" if force else "claimed_until <= ? AND next_attempt_at <= ?"
            params = (now,) if force else (now, now)
            rows = [
                OutboxRow(*r)
                for r in conn.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE {due} ORDER BY created_at, id", params
                ).fetchall()
            ]
            conn.executemany(
                "UPDATE outbox SET claimed_until = ? WHERE id = ?",
                [(now + self.lease_seconds, row.id) for row in rows],
            )
            conn.execute("COMMIT")
        return rows

    def release(self, row: OutboxRow) -> None:
        """Give a claimed row back untried (its sink failed earlier in the same pass)."""
        with self._connect() as conn:
            conn.execute("UPDATE outbox SET claimed_until = 0 WHERE id = ?", (row.id,))

    def delete(self, row: OutboxRow) -> None:
        """Forget a delivered row."""
        with self._connect() as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (row.id,))

    def record_failure(self, row: OutboxRow, attempts: int, error: str, next_attempt_at: float) -> None:
        """Keep an undelivered row with its attempt count, last error and next due time; release its claim."""
        with self._connect() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = ?, last_error = ?, next_attempt_at = ?, claimed_until = 0 WHERE id = ?",
                (attempts, error, next_attempt_at, row.id),
            )

    def drop_stale(self, sinks: list[str], max_age_seconds: float | None) -> list[OutboxRow]:
        """Delete the unclaimed rows whose sink is not in `sinks` (no longer configured) or that are older than
        `max_age_seconds`; return them (for the log line that says so)."""
        now = time.time()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            unclaimed = [
                OutboxRow(*r)
                for r in conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE claimed_until <= ?", (now,)).fetchall()
            ]
            stale = [
                row
                for row in unclaimed
                if row.sink not in sinks or (max_age_seconds is not None and now - row.created_at > max_age_seconds)
            ]
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(row.id,) for row in stale])
            conn.execute("COMMIT")
        return stale

    def rows(self) -> list[OutboxRow]:
        """Every row, oldest first."""
        with self._connect() as conn:
            found = conn.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY created_at, id").fetchall()
        return [OutboxRow(*row) for row in found]
