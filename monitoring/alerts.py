"""Alerts: drift, promotions, rollbacks and retrain decisions, posted to webhooks through a durable outbox.

An `Alert` is one event about one task. `AlertDispatcher` writes one outbox row per (alert, sink) to SQLite
before it posts anything, so an alert survives a receiver that is down or a process that dies; a 2xx answer
deletes the row, anything else leaves it with its attempt count, last error and next due time for
`redeliver_outbox()`, which every later dispatch runs first.

Sinks are webhook URLs. `slack+https://...` or any `https://hooks.slack.com/...` URL receives a Slack
message (`text` + `blocks`); every other URL receives `Alert.to_payload()` as JSON. With a shared secret,
each request is signed (see `sign` and `verify_signature`, which receivers can import).

The secret never reaches logs, errors, outbox rows or reprs, and URLs are shown redacted as
`scheme://host/…`, because Slack URLs carry their token in the path.

Example::

    dispatcher = AlertDispatcher(["slack+https://hooks.slack.com/services/T/B/X"], "s3cret", Path("o.db"))
    report = dispatcher.dispatch(Alert("promotion", "sentiment", "champion -> v3", {"to": "3"}))
    report.all_delivered  # False if a sink was down: its row waits in the outbox for redeliver_outbox()
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

if TYPE_CHECKING:
    from prefix_registry.registry.store import AliasChange
    from prefix_registry.settings import Settings

logger = logging.getLogger("prefix_registry.monitoring.alerts")

SEVERITIES = ("info", "warning", "critical")
SLACK_PREFIX = "slack+"
SLACK_HOST = "hooks.slack.com"
TIMESTAMP_HEADER = "X-Prefix-Registry-Timestamp"
SIGNATURE_HEADER = "X-Prefix-Registry-Signature"
ALERT_ID_HEADER = "X-Prefix-Registry-Alert-Id"
USER_AGENT = "prefix-registry-alerts/0.1"
OUTBOX_FILE = "alerts_outbox.db"

_SEVERITY_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
_ALIAS_KINDS = {"promotion": "info", "rollback": "warning"}
_SLACK_FIELDS_PER_SECTION = 10  # Slack's limit for `fields` in one section block
_SLACK_FIELD_CHARS = 1900  # below Slack's 2000-character limit per field
_MAX_REDELIVERY_DELAY = 900.0  # a long-dead receiver is retried at least every 15 minutes
_EXIT_WAIT_SECONDS = 10.0


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Alert:
    """One event worth telling a person about.

    Args:
        kind: what happened: "drift_detected", "promotion", "rollback", "retrain_decision", ...
        task: the task (registered model) it concerns.
        title: one human-readable line.
        details: JSON-serialisable facts (versions, scores, actor, reason).
        severity: "info", "warning" or "critical".
    """

    kind: str
    task: str
    title: str
    details: dict[str, Any] = field(default_factory=dict)
    severity: str = "info"
    alert_id: str = field(default_factory=_new_id)
    created_at: str = field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        if not isinstance(self.details, dict):
            raise TypeError(f"alert details must be a dict, got {type(self.details).__name__}")

    def to_payload(self) -> dict[str, Any]:
        """The generic JSON body: every field of the alert plus `source: "prefix-registry"`."""
        return {"source": "prefix-registry", **asdict(self)}


# -- sinks and payloads --------------------------------------------------------------------------------------
def is_slack_sink(url: str) -> bool:
    """True when `url` gets a Slack-formatted message: a `slack+` prefix or the `hooks.slack.com` host."""
    if url.startswith(SLACK_PREFIX):
        return True
    try:
        return (urlsplit(url).hostname or "").lower() == SLACK_HOST
    except ValueError:
        return False


def delivery_url(url: str) -> str:
    """The URL actually posted to: the sink with any `slack+` prefix removed."""
    return url.removeprefix(SLACK_PREFIX)


def redact_url(url: str) -> str:
    """`scheme://host[:port]/…`: a URL safe to print (no credentials, path, query or token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if not parts.scheme or not host:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}/…"


def _format_scalar(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _format_value(value: Any) -> str:
    """A detail value as short mrkdwn-free text: dicts become `key=value` lines, lists comma-joined."""
    if isinstance(value, Mapping):
        lines = []
        for key, inner in value.items():
            if isinstance(inner, Mapping):
                inner_text = ", ".join(f"{k}={_format_scalar(v)}" for k, v in inner.items())
            else:
                inner_text = _format_value(inner)
            lines.append(f"{key}: {inner_text}")
        return "\n".join(lines) or "—"
    if isinstance(value, list | tuple | set):
        return ", ".join(_format_value(item) for item in value) or "—"
    return _format_scalar(value)


def _escape_mrkdwn(text: str) -> str:
    # Slack's three control characters; everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail_fields(details: Mapping[str, Any]) -> list[dict[str, str]]:
    fields = []
    for key, value in details.items():
        text = f"*{_escape_mrkdwn(str(key))}*\n{_escape_mrkdwn(_format_value(value))}"
        fields.append({"type": "mrkdwn", "text": _clip(text, _SLACK_FIELD_CHARS)})
    return fields


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (notification fallback) and `blocks` in mrkdwn.

    Blocks: the title with a severity emoji, the details as fields (10 per section), and a context line with
    kind, task, severity, time and alert id.
    """
    emoji = _SEVERITY_EMOJI[alert.severity]
    title = _escape_mrkdwn(alert.title)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"{emoji} *{title}*", 2900)}}
    ]
    fields = _detail_fields(alert.details)
    for start in range(0, len(fields), _SLACK_FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": fields[start : start + _SLACK_FIELDS_PER_SECTION]})
    context = (
        f"*{_escape_mrkdwn(alert.kind)}* · task `{_escape_mrkdwn(alert.task)}` · {alert.severity} · "
        f"{alert.created_at} · id `{alert.alert_id}`"
    )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": f"[{alert.severity.upper()}] {alert.title}", "blocks": blocks}


def payload_for_sink(alert: Alert, sink: str) -> dict[str, Any]:
    """The JSON body `sink` receives: Slack blocks for Slack sinks, `alert.to_payload()` otherwise."""
    return slack_payload(alert) if is_slack_sink(sink) else alert.to_payload()


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; values JSON cannot hold (dates, numpy scalars) are written as strings."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


# -- signing -------------------------------------------------------------------------------------------------
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


# -- reports -------------------------------------------------------------------------------------------------
@dataclass
class SinkDelivery:
    """The outcome for one (alert, sink): `attempts` counts every try of this outbox row so far."""

    sink: str  # redacted
    alert_id: str
    delivered: bool
    attempts: int
    error: str | None = None


@dataclass
class DispatchReport:
    """What one dispatch or redelivery pass did.

    `deliveries` holds the alert just dispatched (one per sink); `redelivered` holds older outbox rows sent
    again in the same pass (empty for a plain `redeliver_outbox()`, whose rows go in `deliveries`).
    """

    deliveries: list[SinkDelivery] = field(default_factory=list)
    redelivered: list[SinkDelivery] = field(default_factory=list)

    @property
    def all_delivered(self) -> bool:
        return all(delivery.delivered for delivery in self.deliveries)

    @property
    def failed(self) -> list[SinkDelivery]:
        return [d for d in [*self.deliveries, *self.redelivered] if not d.delivered]

    def to_dict(self) -> dict[str, Any]:
        return {
            "deliveries": [asdict(d) for d in self.deliveries],
            "redelivered": [asdict(d) for d in self.redelivered],
        }


# -- outbox --------------------------------------------------------------------------------------------------
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
class _OutboxRow:
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


class AlertDispatcher:
    """Posts alerts to webhook sinks, through a SQLite outbox so none is lost.

    Args:
        sinks: webhook URLs (`slack+` prefix or `hooks.slack.com` host for Slack messages).
        secret: shared HMAC secret; None sends unsigned requests.
        outbox_path: SQLite file of undelivered rows (created, mode 0600: it holds the webhook URLs).
        timeout: seconds for each phase of one request (connect, write, read).
        max_attempts: tries per row in one `dispatch` before the row is left for redelivery.
        backoff: seconds before the second try; doubles for each further try, up to `max_backoff`.
        max_backoff: cap of the wait between two tries.

    Rows are claimed with a lease while one thread delivers them, so a background delivery and a
    redelivery pass (or two processes sharing the outbox) never post the same row twice at once; a lease
    left by a process that died expires and the row becomes due again.
    """

    def __init__(
        self,
        sinks: list[str],
        secret: str | None,
        outbox_path: Path,
        timeout: float = 5.0,
        max_attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if timeout <= 0 or backoff < 0:
            raise ValueError(f"timeout must be > 0 and backoff >= 0, got timeout={timeout} backoff={backoff}")
        self._sinks = list(sinks)
        self._secret = SecretStr(secret) if secret else None
        self.outbox_path = Path(outbox_path)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.background_reports: list[DispatchReport] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._exit_hook = False
        self._init_outbox()

    def __repr__(self) -> str:
        sinks = ", ".join(redact_url(s) for s in self._sinks)
        return (
            f"AlertDispatcher(sinks=[{sinks}], signed={self._secret is not None}, "
            f"outbox_path={str(self.outbox_path)!r}, timeout={self.timeout}, "
            f"max_attempts={self.max_attempts})"
        )

    @property
    def sinks(self) -> list[str]:
        """Redacted sink URLs (the real ones stay private: Slack URLs hold a token)."""
        return [redact_url(sink) for sink in self._sinks]

    # -- public ----------------------------------------------------------------------------------------------
    def dispatch(self, alert: Alert) -> DispatchReport:
        """Write the alert's outbox rows, send due older rows, then deliver the alert to every sink.

        Returns a report per sink; a receiver that is down or slow is a failed attempt, never an exception.
        """
        rows = self._enqueue(alert)
        redelivered = self.redeliver_outbox()
        deliveries = self._deliver_rows(rows, self.max_attempts)
        return DispatchReport(deliveries=deliveries, redelivered=redelivered.deliveries)

    def redeliver_outbox(self, force: bool = False) -> DispatchReport:
        """Resend every due outbox row, oldest first, one try each.

        Once a sink fails in this pass its later rows wait for the next pass, so a dead receiver costs one
        timeout, not one per row. `force=True` also sends rows whose next attempt is not due yet.
        """
        rows = self._claim_due(force)
        if not rows:
            return DispatchReport()
        failed_sinks: set[str] = set()
        deliveries = []
        with self._client() as client:
            for row in rows:
                if row.sink in failed_sinks:
                    self._release(row)
                    continue
                delivery = self._deliver(client, row, attempts=1)
                if not delivery.delivered:
                    failed_sinks.add(row.sink)
                deliveries.append(delivery)
        return DispatchReport(deliveries=deliveries)

    def dispatch_in_background(self, alert: Alert) -> threading.Thread:
        """Write the outbox rows now (durable), deliver them in a daemon thread; returns that thread.

        Its report is appended to `background_reports`; `wait()` joins outstanding deliveries.
        """
        rows = self._enqueue(alert)
        thread = threading.Thread(
            target=self._background_delivery, args=(rows,), name=f"alert-{alert.alert_id[:8]}", daemon=True
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            if not self._exit_hook:
                # Daemon threads die at exit: give them a bounded moment (their rows stay in the outbox).
                atexit.register(self.wait, _EXIT_WAIT_SECONDS)
                self._exit_hook = True
        thread.start()
        return thread

    def wait(self, timeout: float | None = None) -> bool:
        """Join background deliveries for at most `timeout` seconds in all; True when none is left running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return not self._threads

    def pending(self) -> list[dict[str, Any]]:
        """Outbox rows, oldest first: id, alert_id, kind, task, sink (redacted), attempts, last_error, times.

        `next_attempt_at` is unix seconds (when `redeliver_outbox()` will send the row again).
        """
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY created_at, id").fetchall()
        return [self._describe(_OutboxRow(*row)) for row in rows]

    # -- outbox storage --------------------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short connection per operation: safe across threads, and other processes can share the file.
        with closing(sqlite3.connect(self.outbox_path, timeout=30, isolation_level=None)) as conn:
            yield conn

    def _init_outbox(self) -> None:
        self.outbox_path.parent.mkdir(parents=True, exist_ok=True)
        self.outbox_path.touch(mode=0o600, exist_ok=True)
        with self._connect() as conn:
            conn.execute(_SCHEMA)

    @property
    def _lease_seconds(self) -> float:
        # Longest one row can be in flight: every try (connect + write + read) and every wait, plus a margin.
        return self.max_attempts * (3 * self.timeout + self.max_backoff) + 60.0

    def _enqueue(self, alert: Alert) -> list[_OutboxRow]:
        now = time.time()
        claimed_until = now + self._lease_seconds
        rows = []
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            for sink in self._sinks:
                body = encode_body(payload_for_sink(alert, sink))
                cursor = conn.execute(
                    "INSERT INTO outbox (alert_id, kind, task, sink, body, created_at, next_attempt_at, "
                    "claimed_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (alert.alert_id, alert.kind, alert.task, sink, body, now, now, claimed_until),
                )
                rows.append(
                    _OutboxRow(
                        cursor.lastrowid or 0, alert.alert_id, alert.kind, alert.task, sink, body, 0, None, now, now
                    )
                )
            conn.execute("COMMIT")
        logger.debug("alert %s (%s, task %s) queued for %d sink(s)", alert.alert_id, alert.kind, alert.task, len(rows))
        return rows

    def _claim_due(self, force: bool) -> list[_OutboxRow]:
        now = time.time()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            due = "claimed_until <= ?" if force else "claimed_until <= ? AND next_attempt_at <= ?"
            params = (now,) if force else (now, now)
            rows = [
                _OutboxRow(*r)
                for r in conn.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE {due} ORDER BY created_at, id", params
                ).fetchall()
            ]
            conn.executemany(
                "UPDATE outbox SET claimed_until = ? WHERE id = ?",
                [(now + self._lease_seconds, row.id) for row in rows],
            )
            conn.execute("COMMIT")
        return rows

    def _release(self, row: _OutboxRow) -> None:
        with self._connect() as conn:
            conn.execute("UPDATE outbox SET claimed_until = 0 WHERE id = ?", (row.id,))

    def _delete(self, row: _OutboxRow) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (row.id,))

    def _record_failure(self, row: _OutboxRow, attempts: int, error: str) -> float:
        next_attempt_at = time.time() + min(self.backoff * 2**attempts, _MAX_REDELIVERY_DELAY)
        with self._connect() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = ?, last_error = ?, next_attempt_at = ?, claimed_until = 0 WHERE id = ?",
                (attempts, error, next_attempt_at, row.id),
            )
        return next_attempt_at

    @staticmethod
    def _describe(row: _OutboxRow) -> dict[str, Any]:
        return {
            "id": row.id,
            "alert_id": row.alert_id,
            "kind": row.kind,
            "task": row.task,
            "sink": redact_url(row.sink),
            "attempts": row.attempts,
            "last_error": row.last_error,
            "created_at": datetime.fromtimestamp(row.created_at, UTC).isoformat(timespec="seconds"),
            "next_attempt_at": row.next_attempt_at,
        }

    # -- delivery --------------------------------------------------------------------------------------------
    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT})

    def _background_delivery(self, rows: list[_OutboxRow]) -> None:
        try:
            report = DispatchReport(deliveries=[], redelivered=self.redeliver_outbox().deliveries)
            report.deliveries = self._deliver_rows(rows, self.max_attempts)
            with self._lock:
                self.background_reports.append(report)
        except Exception:  # a dying daemon thread must say why; its rows stay in the outbox
            logger.exception("background alert delivery failed; rows stay in %s", self.outbox_path)

    def _deliver_rows(self, rows: Iterable[_OutboxRow], attempts: int) -> list[SinkDelivery]:
        with self._client() as client:
            return [self._deliver(client, row, attempts) for row in rows]

    def _deliver(self, client: httpx.Client, row: _OutboxRow, attempts: int) -> SinkDelivery:
        """Try `row` up to `attempts` times with backoff; delete it on a 2xx, record the failure otherwise."""
        error = "not attempted"
        for attempt in range(attempts):
            if attempt:
                time.sleep(self._backoff_delay(attempt - 1))
            error_or_none = self._post(client, row)
            if error_or_none is None:
                self._delete(row)
                total = row.attempts + attempt + 1
                logger.info("alert %s delivered to %s (attempt %d)", row.alert_id, redact_url(row.sink), total)
                return SinkDelivery(redact_url(row.sink), row.alert_id, True, total)
            error = error_or_none
            logger.debug("alert %s to %s: attempt failed: %s", row.alert_id, redact_url(row.sink), error)
        total = row.attempts + attempts
        next_at = self._record_failure(row, total, error)
        logger.warning(
            "alert %s (%s) not delivered to %s after %d attempt(s): %s; kept in outbox, next try after %s",
            row.alert_id,
            row.kind,
            redact_url(row.sink),
            total,
            error,
            datetime.fromtimestamp(next_at, UTC).isoformat(timespec="seconds"),
        )
        return SinkDelivery(redact_url(row.sink), row.alert_id, False, total, error)

    def _backoff_delay(self, retry: int) -> float:
        return min(self.backoff * 2**retry, self.max_backoff)

    def _headers(self, row: _OutboxRow) -> dict[str, str]:
        headers = {"Content-Type": "application/json", ALERT_ID_HEADER: row.alert_id}
        if self._secret is not None:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret.get_secret_value(), timestamp, row.body)
        return headers

    def _post(self, client: httpx.Client, row: _OutboxRow) -> str | None:
        """One POST of `row`; returns None on a 2xx, else a redacted description of what went wrong."""
        url = delivery_url(row.sink)
        try:
            response = client.post(url, content=row.body, headers=self._headers(row))
        except Exception as exc:  # refused, timed out, bad URL: all are a failed attempt, never the caller's
            return self._scrub(f"{type(exc).__name__}: {exc}", row.sink)
        if 200 <= response.status_code < 300:
            return None
        return self._scrub(f"HTTP {response.status_code}: {_clip(response.text.strip(), 200)}", row.sink)

    def _scrub(self, text: str, sink: str) -> str:
        """Remove the secret and the sink's URL (and its path, which may hold a token) from `text`."""
        if self._secret is not None:
            text = text.replace(self._secret.get_secret_value(), "***")
        url = delivery_url(sink)
        for secretive in (sink, url):
            text = text.replace(secretive, redact_url(sink))
        try:
            path = urlsplit(url).path
        except ValueError:
            path = ""
        if len(path) > 1:
            text = text.replace(path, "/…")
        return text


# -- convenience ---------------------------------------------------------------------------------------------
def dispatcher_from_settings(settings: Settings | None = None) -> AlertDispatcher | None:
    """An `AlertDispatcher` for the configured webhooks, outbox in `home/alerts_outbox.db`; None if none."""
    from prefix_registry.settings import Settings

    settings = settings or Settings()
    if not settings.alert_webhooks:
        return None
    settings.ensure_home()
    secret = settings.alert_secret.get_secret_value() if settings.alert_secret is not None else None
    return AlertDispatcher(list(settings.alert_webhooks), secret, settings.home / OUTBOX_FILE)


def send_alert(alert: Alert, settings: Settings | None = None, background: bool = False) -> DispatchReport | None:
    """Send `alert` to the configured webhooks.

    Returns the report, or None when no webhook is configured or when `background=True` (delivery then runs
    in a daemon thread, the rows already safe in the outbox).
    """
    dispatcher = dispatcher_from_settings(settings)
    if dispatcher is None:
        logger.debug("no alert webhooks configured; %s alert for %s not sent", alert.kind, alert.task)
        return None
    if background:
        dispatcher.dispatch_in_background(alert)
        return None
    return dispatcher.dispatch(alert)


def alias_change_alert(change: AliasChange, kind: str) -> Alert:
    """A "promotion" (info) or "rollback" (warning) alert from a registry `AliasChange`."""
    if kind not in _ALIAS_KINDS:
        raise ValueError(f"alias change kind must be one of {', '.join(_ALIAS_KINDS)}, got {kind!r}")
    before = f"version {change.from_version}" if change.from_version else "unset"
    if kind == "promotion":
        title = f"{change.task}: {change.alias} promoted to version {change.to_version} (was {before})"
    else:
        title = f"{change.task}: {change.alias} rolled back from {before} to version {change.to_version}"
    severity = _ALIAS_KINDS[kind]
    return Alert(kind=kind, task=change.task, title=title, details=change.summary(), severity=severity)


def alert_alias_change(change: AliasChange, kind: str, settings: Settings | None = None) -> DispatchReport | None:
    """Tell the webhooks that an alias moved ("promotion" or "rollback"); synchronous, bounded by timeouts.

    Returns the report, or None when no webhook is configured or the outbox itself failed. Never raises
    because of a receiver: the registry change already happened and the alert waits in the outbox.
    """
    alert = alias_change_alert(change, kind)
    try:
        return send_alert(alert, settings)
    except Exception as exc:  # the alias already moved; a broken outbox must not turn that into an error
        logger.warning("could not queue %s alert for %s: %s", kind, change.task, type(exc).__name__)
        return None


def _signal_summary(signals: Any) -> dict[str, dict[str, Any]]:
    """`{name: {score, threshold, drifted, method}}` from a dict (or a list of dicts with `name`)."""
    if isinstance(signals, list):
        signals = {str(s.get("name", i)): s for i, s in enumerate(signals) if isinstance(s, Mapping)}
    if not isinstance(signals, Mapping):
        return {}
    summary = {}
    for name, signal in signals.items():
        signal = signal if isinstance(signal, Mapping) else {"score": signal}
        summary[str(name)] = {key: signal.get(key) for key in ("score", "threshold", "drifted", "method")}
    return summary


def drift_alert(task: str, version: str, verdict: Mapping[str, Any]) -> Alert:
    """A "drift_detected" warning alert from a drift verdict dict (missing keys are tolerated).

    Reads `drift_detected`, `signals` ({name: {score, threshold, drifted, method}}), `current_size` and
    `reference_size`; the title names the drifted signals.
    """
    signals = _signal_summary(verdict.get("signals"))
    drifted = [name for name, signal in signals.items() if signal.get("drifted")]
    detected = bool(verdict.get("drift_detected", bool(drifted)))
    if drifted:
        what = f"{len(drifted)} of {len(signals)} signal(s) drifted: {', '.join(drifted)}"
    else:
        what = "drift detected" if detected else "no signal over its threshold"
    details = {
        "version": str(version),
        "drift_detected": detected,
        "drifted_signals": drifted,
        "current_size": verdict.get("current_size"),
        "reference_size": verdict.get("reference_size"),
        "signals": signals,
    }
    title = f"{task} v{version}: {what}"
    return Alert(kind="drift_detected", task=task, title=title, details=details, severity="warning")
