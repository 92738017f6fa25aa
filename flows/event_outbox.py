"""Events that survive a Prefect outage (drift found, alias moved): written to a local outbox first, emitted when
Prefect answers.

Prefect's `emit_event` hands the event to a background worker and returns; when the server is down the worker
drops it after logging, so a drift found during an outage would never trigger its retrain. Here each drift event is
first a row in `drift_events_outbox.db` (SQLite in the home, committed before anything is sent). It is emitted
only after Prefect's `/health` answers, and marked sent with its event id; rows still pending are emitted again at
the start of every later monitoring pass (`deliver_pending`), oldest first, so the event reaches Prefect once it is
back. Delivery is at-least-once: a pass killed between emitting and marking sends that event again, and a
duplicate retrain trigger is refused by the retrain's cooldown.

Promotion and rollback events wait in the same file (table `alias_events`, stored as event name, resource and
payload) and go out with the next alias move or monitoring pass that finds Prefect up.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from prefix_registry.flows.events import emit_drift_event, emit_stored_event
from prefix_registry.monitoring.drift import DriftVerdict

logger = logging.getLogger(__name__)

OUTBOX_FILE = "drift_events_outbox.db"


class EventOutbox:
    """Pending drift and alias events in one SQLite file (named `drift_events_outbox.db` since it held only drift
    events; the name stays so that an upgrade keeps what is pending)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS drift_events (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, task TEXT "
                "NOT NULL, version TEXT NOT NULL, verdict TEXT NOT NULL, event_id TEXT, sent_at TEXT, "
                "monitoring_run_id TEXT NOT NULL DEFAULT '')"
            )
            connection.execute(
                "CREATE TABLE IF NOT EXISTS alias_events (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, name TEXT "
                "NOT NULL, resource TEXT NOT NULL, payload TEXT NOT NULL, event_id TEXT, sent_at TEXT)"
            )

    @classmethod
    def from_settings(cls, settings: Any = None) -> EventOutbox:
        from prefix_registry.settings import Settings

        return cls((settings or Settings()).home / OUTBOX_FILE)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as connection:
            connection.execute("PRAGMA synchronous=FULL")
            yield connection

    def add(self, verdict: DriftVerdict, monitoring_run_id: str) -> str:
        """Store an event to send (committed when this returns); returns its outbox id."""
        row_id = uuid.uuid4().hex
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO drift_events (id, created_at, task, version, verdict, monitoring_run_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    row_id,
                    datetime.now(UTC).isoformat(),
                    verdict.task,
                    verdict.version,
                    json.dumps(verdict.to_dict(), default=str),
                    monitoring_run_id,
                ),
            )
        return row_id

    def pending(self) -> list[dict[str, Any]]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT id, created_at, task, version, verdict, monitoring_run_id FROM drift_events "
                "WHERE sent_at IS NULL ORDER BY created_at, id"
            ).fetchall()
        return [
            {
                "id": r[0],
                "created_at": r[1],
                "task": r[2],
                "version": r[3],
                "verdict": DriftVerdict.from_dict(json.loads(r[4])),
                "monitoring_run_id": r[5],
            }
            for r in rows
        ]

    def mark_sent(self, row_id: str, event_id: str) -> None:
        with self._connect() as connection:
            connection.execute(
                "UPDATE drift_events SET event_id = ?, sent_at = ? WHERE id = ?",
                (event_id, datetime.now(UTC).isoformat(), row_id),
            )

    def add_alias_event(self, name: str, resource: dict[str, str], payload: dict[str, Any]) -> str:
        """Store an alias event to send (committed when this returns); returns its outbox id."""
        row_id = uuid.uuid4().hex
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO alias_events (id, created_at, name, resource, payload) VALUES (?, ?, ?, ?, ?)",
                (row_id, datetime.now(UTC).isoformat(), name, json.dumps(resource), json.dumps(payload, default=str)),
            )
        return row_id

    def pending_alias_events(self) -> list[dict[str, Any]]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT id, name, resource, payload FROM alias_events WHERE sent_at IS NULL ORDER BY created_at, id"
            ).fetchall()
        return [{"id": r[0], "name": r[1], "resource": json.loads(r[2]), "payload": json.loads(r[3])} for r in rows]

    def mark_alias_event_sent(self, row_id: str, event_id: str) -> None:
        with self._connect() as connection:
            connection.execute(
                "UPDATE alias_events SET event_id = ?, sent_at = ? WHERE id = ?",
                (event_id, datetime.now(UTC).isoformat(), row_id),
            )


def prefect_reachable(timeout: float = 10.0, api_url: str | None = None) -> bool:
    """True when the Prefect API at `api_url` (default: PREFECT_API_URL) answers its health check."""
    from prefect.settings import PREFECT_API_URL

    url = api_url or PREFECT_API_URL.value()
    if not url:
        return False
    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def deliver_pending(outbox: EventOutbox, health_timeout: float = 10.0) -> dict[str, str]:
    """Emit every pending event (drift, then alias moves; each oldest first) when Prefect answers; returns outbox
    id -> event id of those sent."""
    drift, alias = outbox.pending(), outbox.pending_alias_events()
    if not (drift or alias) or not prefect_reachable(timeout=health_timeout):
        if drift or alias:
            logger.warning(
                "Prefect unreachable: %d event(s) wait in %s for the next alias move or monitoring pass",
                len(drift) + len(alias),
                outbox.path,
            )
        return {}
    sent: dict[str, str] = {}
    for row in drift:
        event_id = emit_drift_event(row["verdict"], row["monitoring_run_id"])
        if event_id is None:
            return sent  # events are not being sent in this process: keep them for a pass that can
        outbox.mark_sent(row["id"], event_id)
        sent[row["id"]] = event_id
    for row in alias:
        event_id = emit_stored_event(row["name"], row["resource"], row["payload"])
        if event_id is None:
            return sent
        outbox.mark_alias_event_sent(row["id"], event_id)
        sent[row["id"]] = event_id
    return sent


def emit_drift_event_durably(verdict: DriftVerdict, monitoring_run_id: str) -> str | None:
    """Store the drift event, then emit it (and any older pending ones); its event id, or None while it waits."""
    outbox = EventOutbox.from_settings()
    row_id = outbox.add(verdict, monitoring_run_id)
    return deliver_pending(outbox).get(row_id)
