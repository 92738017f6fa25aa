"""Delivery: posts each alert to every sink through the outbox, with retries, backoff and signing.

A 2xx answer deletes the outbox row; anything else leaves it with its attempt count, last error and next due time
for `redeliver_outbox()`, which every later dispatch runs first. The secret never reaches logs, errors, outbox rows
or reprs.

Example::

    dispatcher = AlertDispatcher(["slack+https://hooks.slack.com/services/T/B/X"], "s3cret", Path("o.db"))
    report = dispatcher.dispatch(Alert("promotion", "sentiment", "champion -> v3", {"to": "3"}))
    report.all_delivered  # False if a sink was down: its row waits in the outbox for redeliver_outbox()
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from prefix_registry.alerts.model import Alert
from prefix_registry.alerts.outbox import OUTBOX_FILE, AlertOutbox, OutboxRow
from prefix_registry.alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from prefix_registry.alerts.sinks import delivery_url, redact_url
from prefix_registry.alerts.slack import clip

if TYPE_CHECKING:
    from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

ALERT_ID_HEADER = "X-Prefix-Registry-Alert-Id"
USER_AGENT = "prefix-registry-alerts/0.1"
_MAX_REDELIVERY_DELAY = 900.0  # a long-dead receiver is retried at least every 15 minutes
_EXIT_WAIT_SECONDS = 10.0


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
        max_age: seconds a queued row may wait; older ones are dropped (with a log line), never delivered. None:
            no limit. Rows for a sink no longer in `sinks` are dropped the same way: an alert goes only where the
            configuration says, signed with the secret of that configuration.

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
        max_age: float | None = None,
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
        self.max_age = max_age
        self.background_reports: list[DispatchReport] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._exit_hook = False
        self.outbox = AlertOutbox(self.outbox_path, self._lease_seconds)

    def __repr__(self) -> str:
        sinks = ", ".join(redact_url(s) for s in self._sinks)
        return (
            f"AlertDispatcher(sinks=[{sinks}], signed={self._secret is not None}, "
            f"outbox_path={str(self.outbox_path)!r}, timeout={self.timeout}, "
            f"max_attempts={self.max_attempts})"
        )

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
        self._drop_stale()
        rows = self.outbox.claim_due(force)
        if not rows:
            return DispatchReport()
        failed_sinks: set[str] = set()
        deliveries = []
        with self._client() as client:
            for row in rows:
                if row.sink in failed_sinks:
                    self.outbox.release(row)
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
        return [row.describe() for row in self.outbox.rows()]

    @property
    def _lease_seconds(self) -> float:
        # Longest one row can be in flight: every try (connect + write + read) and every wait, plus a margin.
        return self.max_attempts * (3 * self.timeout + self.max_backoff) + 60.0

    def _drop_stale(self) -> None:
        for row in self.outbox.drop_stale(self._sinks, self.max_age):
            why = "its webhook is no longer configured" if row.sink not in self._sinks else "it expired"
            logger.warning(
                "alert %s (%s, task %s) for %s dropped from the outbox after %d attempt(s): %s",
                row.alert_id,
                row.kind,
                row.task,
                redact_url(row.sink),
                row.attempts,
                why,
            )

    def _enqueue(self, alert: Alert) -> list[OutboxRow]:
        rows = self.outbox.enqueue(alert, self._sinks)
        logger.debug("alert %s (%s, task %s) queued for %d sink(s)", alert.alert_id, alert.kind, alert.task, len(rows))
        return rows

    # -- delivery --------------------------------------------------------------------------------------------
    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT})

    def _background_delivery(self, rows: list[OutboxRow]) -> None:
        try:
            report = DispatchReport(deliveries=[], redelivered=self.redeliver_outbox().deliveries)
            report.deliveries = self._deliver_rows(rows, self.max_attempts)
            with self._lock:
                self.background_reports.append(report)
        except Exception:  # a dying daemon thread must say why; its rows stay in the outbox
            logger.exception("background alert delivery failed; rows stay in %s", self.outbox_path)

    def _deliver_rows(self, rows: Iterable[OutboxRow], attempts: int) -> list[SinkDelivery]:
        with self._client() as client:
            return [self._deliver(client, row, attempts) for row in rows]

    def _deliver(self, client: httpx.Client, row: OutboxRow, attempts: int) -> SinkDelivery:
        """Try `row` up to `attempts` times with backoff; delete it on a 2xx, record the failure otherwise."""
        error = "not attempted"
        for attempt in range(attempts):
            if attempt:
                time.sleep(self._backoff_delay(attempt - 1))
            error_or_none = self._post(client, row)
            if error_or_none is None:
                self.outbox.delete(row)
                total = row.attempts + attempt + 1
                logger.info("alert %s delivered to %s (attempt %d)", row.alert_id, redact_url(row.sink), total)
                return SinkDelivery(redact_url(row.sink), row.alert_id, True, total)
            error = error_or_none
            logger.debug("alert %s to %s: attempt failed: %s", row.alert_id, redact_url(row.sink), error)
        total = row.attempts + attempts
        next_at = time.time() + min(self.backoff * 2**total, _MAX_REDELIVERY_DELAY)
        self.outbox.record_failure(row, total, error, next_at)
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

    def _headers(self, row: OutboxRow) -> dict[str, str]:
        headers = {"Content-Type": "application/json", ALERT_ID_HEADER: row.alert_id}
        if self._secret is not None:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret.get_secret_value(), timestamp, row.body)
        return headers

    def _post(self, client: httpx.Client, row: OutboxRow) -> str | None:
        """One POST of `row`; returns None on a 2xx, else a redacted description of what went wrong."""
        url = delivery_url(row.sink)
        try:
            response = client.post(url, content=row.body, headers=self._headers(row))
        except Exception as exc:  # refused, timed out, bad URL: all are a failed attempt, never the caller's
            return self._scrub(f"{type(exc).__name__}: {exc}", row.sink)
        if 200 <= response.status_code < 300:
            return None
        return self._scrub(f"HTTP {response.status_code}: {clip(response.text.strip(), 200)}", row.sink)

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


def dispatcher_from_settings(settings: Settings | None = None) -> AlertDispatcher | None:
    """An `AlertDispatcher` for the configured webhooks, outbox in `home/alerts_outbox.db`; None if none."""
    from prefix_registry.settings import Settings

    settings = settings or Settings()
    if not settings.alert_webhooks:
        return None
    settings.ensure_home()
    secret = settings.alert_secret.get_secret_value() if settings.alert_secret is not None else None
    return AlertDispatcher(
        list(settings.alert_webhooks), secret, settings.home / OUTBOX_FILE, max_age=settings.alert_max_age_s
    )


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
