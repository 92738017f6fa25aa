"""The live prediction log: every served prediction, the true label that may follow it, and windows of both.

The HTTP server and `prefixctl predict --log` write here; the drift monitor and the retraining flow read
windows. Any SQLAlchemy URL works: SQLite by default (one file, WAL mode) and PostgreSQL (`postgresql+psycopg://`).

    with PredictionLog("sqlite:///predictions.db") as log:
        record = PredictionRecord.new("sentiment", "3", "great film", "pos", {"pos": 0.9, "neg": 0.1})
        log.enqueue([record])  # returns at once; a background thread inserts in batches
        log.attach_feedback(record.prediction_id, "pos")
        frame = log.window("sentiment", last_n=500)  # a row per prediction, a prob_<label> column per label
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Dialect, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from prefix_registry.errors import PrefixRegistryError

if TYPE_CHECKING:
    from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

BASE_COLUMNS = [
    "prediction_id",
    "created_at",
    "task",
    "version",
    "text",
    "predicted_label",
    "confidence",
    "feedback_label",
    "feedback_at",
    "request_id",
    "source",
    "key_name",
    "feedback_key",
]
PROBABILITY_PREFIX = "prob_"
# Bounds how long the interpreter may wait at exit for queued rows when the database does not answer.
EXIT_FLUSH_TIMEOUT_S = 30.0


class PredictionLogError(PrefixRegistryError):
    """The prediction log cannot be opened, written or read, or was given an invalid value."""


class FeedbackConflict(PredictionLogError):
    """A prediction that already has a different label was labelled again without asking for a correction."""


def _as_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise PredictionLogError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got naive {value}")
    return value.astimezone(UTC)


@dataclass
class PredictionRecord:
    """One prediction as served, plus the ground-truth label attached later as feedback.

    `probabilities` maps every label to its probability; `confidence` is the largest of them.
    Times are timezone-aware UTC.
    """

    prediction_id: str
    created_at: datetime
    task: str
    version: str
    text: str
    predicted_label: str
    probabilities: dict[str, float]
    confidence: float
    request_id: str | None
    source: str
    feedback_label: str | None = None
    feedback_at: datetime | None = None
    key_name: str | None = None  # the API key that asked for the prediction (its name, never its secret)
    feedback_key: str | None = None  # the API key that sent the label

    @classmethod
    def new(
        cls,
        task: str,
        version: str,
        text: str,
        predicted_label: str,
        probabilities: Mapping[str, float],
        request_id: str | None = None,
        source: str = "http",
        created_at: datetime | None = None,
        key_name: str | None = None,
    ) -> PredictionRecord:
        """A record for a prediction made now (or at `created_at`), with a fresh uuid4 hex id.

        Raises PredictionLogError when `probabilities` is empty or `created_at` is naive.
        """
        if not probabilities:
            raise PredictionLogError(f"prediction of task {task!r} has no probabilities; expected label -> p")
        probs = {str(label): float(p) for label, p in probabilities.items()}
        return cls(
            prediction_id=uuid.uuid4().hex,
            created_at=datetime.now(UTC) if created_at is None else _as_utc(created_at, "created_at"),
            task=task,
            version=str(version),
            text=text,
            predicted_label=predicted_label,
            probabilities=probs,
            confidence=max(probs.values()),
            request_id=request_id,
            source=source,
            key_name=key_name,
        )


class _UTCDateTime(sa.TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database does with time zones."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _as_utc(value, "timestamp")
        # Only PostgreSQL keeps the offset; elsewhere naive UTC keeps string comparison (SQLite) correct.
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    _metadata,
    sa.Column("prediction_id", sa.String(64), primary_key=True),
    sa.Column("created_at", _UTCDateTime(), nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("predicted_label", sa.Text, nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),  # JSON object label -> probability
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("request_id", sa.Text),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("feedback_label", sa.Text),
    sa.Column("feedback_at", _UTCDateTime()),
    sa.Column("key_name", sa.Text),
    sa.Column("feedback_key", sa.Text),
    sa.Index("ix_predictions_task_created_at", "task", "created_at"),
)
# Columns added after the first release: a log created before them gets them on open (ALTER TABLE ADD COLUMN).
_ADDED_COLUMNS = ("key_name", "feedback_key")

# Every label ever sent, corrections included: `predictions.feedback_label` holds the current one, this the trail.
feedback_events = sa.Table(
    "feedback_events",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String(64), nullable=False, index=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("previous_label", sa.Text),
    sa.Column("key_name", sa.Text),
    sa.Column("at", _UTCDateTime(), nullable=False),
)


def _add_missing_columns(engine: Engine) -> None:
    present = {column["name"] for column in sa.inspect(engine).get_columns("predictions")}
    with engine.begin() as connection:
        for name in _ADDED_COLUMNS:
            if name not in present:
                connection.execute(sa.text(f"ALTER TABLE predictions ADD COLUMN {name} TEXT"))


def _to_row(record: PredictionRecord) -> dict[str, Any]:
    row = asdict(record)
    row["probabilities"] = json.dumps(record.probabilities)
    for column in ("created_at", "feedback_at"):
        if row[column] is not None:
            row[column] = _as_utc(row[column], column)
    return row


def _from_row(row: sa.Row) -> PredictionRecord:
    values = dict(row._mapping)
    values["probabilities"] = json.loads(values["probabilities"])
    return PredictionRecord(**values)


def mask_url(url: str | URL) -> str:
    """`url` with its password replaced by ***, also for strings SQLAlchemy cannot parse."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]  # the password may itself contain ':'; the user name may not
    return f"{scheme}{separator}{user}:***@{host}"


def _reason(error: BaseException, password: str | None) -> str:
    """The first line of the driver's message, never containing the password."""
    message = str(error.orig if isinstance(error, DBAPIError) else error).strip()
    first = message.splitlines()[0] if message else type(error).__name__
    return first.replace(password, "***") if password else first


def create_database_engine(url: str) -> Engine:
    try:
        parsed = sa.make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise PredictionLogError(f"invalid prediction log URL {mask_url(url)!r}: {exc}") from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            # One shared connection, or each thread (the background writer!) would see its own empty database.
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        else:
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PredictionLogError(f"cannot create the folder of {mask_url(parsed)}: {exc}") from None
            kwargs = {"connect_args": {"timeout": 30}}
    elif parsed.get_backend_name() == "postgresql":
        kwargs = {"pool_pre_ping": True}
        if "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError, TypeError) as exc:
        raise PredictionLogError(f"cannot open prediction log {mask_url(parsed)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _enable_wal)
    return engine


def _enable_wal(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the drift monitor read while the server's background thread writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed row survives power loss too, not only a killed process (an fsync per commit; the writer
    # commits batches, so concurrent requests share it).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _insert_statement(dialect_name: str) -> sa.Insert:
    """An insert that skips ids already stored, so retrying a batch that did commit never doubles it."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return sa.insert(predictions)
    return insert(predictions).on_conflict_do_nothing(index_elements=["prediction_id"])


_open_logs: weakref.WeakSet[PredictionLog] = weakref.WeakSet()


@atexit.register
def _flush_open_logs() -> None:
    for log in list(_open_logs):
        if not log.flush(timeout=EXIT_FLUSH_TIMEOUT_S):
            logger.error("prediction log %s: %d predictions not written at exit", log.url, log.pending)


class PredictionLog:
    """Predictions stored in the `predictions` table of any SQLAlchemy database.

    Args:
        url: SQLAlchemy URL, e.g. `sqlite:////var/lib/prefix/predictions.db` or
            `postgresql+psycopg://user:password@host:5432/db`. The table is created if missing.
        batch_size: rows per INSERT of the background writer.
        flush_interval: seconds the background writer waits for a batch to fill before writing what it has.
        max_retries: failed attempts of the background writer before it drops the queued rows.
        retry_backoff: seconds before the first retry; doubled after each further failure.

    Raises:
        PredictionLogError: the URL is invalid or the database cannot be reached (password masked).
    """

    def __init__(
        self,
        url: str,
        batch_size: int = 256,
        flush_interval: float = 0.5,
        *,
        max_retries: int = 5,
        retry_backoff: float = 0.5,
    ) -> None:
        if batch_size < 1 or flush_interval < 0 or max_retries < 1 or retry_backoff < 0:
            raise PredictionLogError(
                f"expected batch_size >= 1, flush_interval >= 0, max_retries >= 1, retry_backoff >= 0; got "
                f"{batch_size}, {flush_interval}, {max_retries}, {retry_backoff}"
            )
        self._engine = create_database_engine(url)
        self.url = mask_url(self._engine.url)
        self._password = self._engine.url.password
        try:
            _metadata.create_all(self._engine)
            _add_missing_columns(self._engine)
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise PredictionLogError(f"cannot open prediction log {self.url}: {self._reason(exc)}") from None
        self._insert = _insert_statement(self._engine.dialect.name)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff

        # Rows stay in _queue until written (or dropped), so `pending` counts the batch being written too.
        self._cond = threading.Condition()
        self._queue: list[dict[str, Any]] = []
        self._enqueued = 0
        self._done = 0  # rows written or dropped; FIFO order makes "_done >= n" mean "the first n are done"
        self._flush_target = 0
        self._dropped = 0
        self._dropped_ranges: list[tuple[int, int]] = []  # (first, last] positions dropped, for commit()
        self._failures = 0
        self._last_error: BaseException | None = None
        self._closed = False
        self._worker: threading.Thread | None = None
        _open_logs.add(self)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> PredictionLog:
        """The log at `settings.resolved_prediction_log_url` (default: SQLite in the registry home)."""
        from prefix_registry.settings import Settings

        return cls((settings or Settings()).resolved_prediction_log_url, **kwargs)

    def __repr__(self) -> str:
        return f"PredictionLog({self.url!r})"

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Rows enqueued but not yet written (nor dropped)."""
        with self._cond:
            return len(self._queue)

    @property
    def last_error(self) -> BaseException | None:
        """The error of the latest failed background write; None again once a later write succeeds."""
        with self._cond:
            return self._last_error

    @property
    def dropped(self) -> int:
        """Rows the background writer gave up on after `max_retries` failed attempts."""
        with self._cond:
            return self._dropped

    # --- writing

    def write(self, records: Iterable[PredictionRecord]) -> int:
        """Insert `records` now, in one transaction; returns how many were given.

        Ids already stored are skipped. Raises PredictionLogError when the database refuses the write.
        """
        self._check_open()
        rows = [_to_row(record) for record in records]
        try:
            self._insert_rows(rows)
        except SQLAlchemyError as exc:
            raise PredictionLogError(
                f"cannot write {len(rows)} predictions to {self.url}: {self._reason(exc)}"
            ) from None
        return len(rows)

    def enqueue(self, records: Iterable[PredictionRecord]) -> int:
        """Queue `records` for the background writer and return at once; returns how many were queued.

        Records are serialised here, so an invalid one raises in the caller rather than in the writer thread.
        """
        rows = [_to_row(record) for record in records]
        with self._cond:
            self._check_open()
            if not rows:
                return 0
            self._queue.extend(rows)
            self._enqueued += len(rows)
            # Also restarts the writer in a forked server worker, where the parent's thread does not exist.
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._drain, name="prediction-log-writer", daemon=True)
                self._worker.start()
            self._cond.notify_all()
        return len(rows)

    def commit(self, records: Iterable[PredictionRecord], timeout: float = 30.0) -> int:
        """Queue `records` and return once the background writer has committed them: an answer sent after this
        survives kill -9 (and power loss: SQLite runs with synchronous=FULL). Concurrent callers share one
        transaction, so the cost is one commit per batch, not per request.

        Raises PredictionLogError when the rows were dropped after failed retries or `timeout` passed first.
        """
        rows = [_to_row(record) for record in records]
        with self._cond:
            self._check_open()
            if not rows:
                return 0
            first = self._enqueued
            self._queue.extend(rows)
            self._enqueued += len(rows)
            last = self._enqueued
            self._flush_target = max(self._flush_target, last)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._drain, name="prediction-log-writer", daemon=True)
                self._worker.start()
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._done >= last, timeout):
                raise PredictionLogError(f"prediction log {self.url}: {len(rows)} rows not committed in {timeout:g}s")
            if any(start < last and first < end for start, end in self._dropped_ranges):
                raise PredictionLogError(
                    f"prediction log {self.url}: {len(rows)} rows could not be written: {self._reason_text()}"
                )
        return len(rows)

    def _reason_text(self) -> str:
        return self._reason(self._last_error) if self._last_error is not None else "unknown error"

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row enqueued before this call is written (or dropped after failed retries).

        Returns False when `timeout` seconds passed first.
        """
        with self._cond:
            target = self._enqueued
            if self._done >= target:
                return True
            self._flush_target = max(self._flush_target, target)
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the background writer and release the database connections. Safe to call twice."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            worker = self._worker
            self._cond.notify_all()
        if worker is not None:
            worker.join(timeout)
            if worker.is_alive():
                logger.error("prediction log %s closed with %d predictions unwritten", self.url, self.pending)
        _open_logs.discard(self)
        self._engine.dispose()

    def _drain(self) -> None:
        """The writer thread: wait for rows, write a batch, retry with backoff, drop after max_retries."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed and nothing left
                self._cond.wait_for(self._batch_due, self.flush_interval)
                batch = self._queue[: self.batch_size]
            try:
                self._insert_rows(batch)
            except Exception as exc:  # whatever goes wrong, the writer thread must survive
                self._on_failure(batch, exc)
            else:
                with self._cond:
                    del self._queue[: len(batch)]
                    self._done += len(batch)
                    self._failures = 0
                    self._last_error = None
                    self._cond.notify_all()

    def _batch_due(self) -> bool:
        return len(self._queue) >= self.batch_size or self._closed or self._flush_target > self._done

    def _on_failure(self, batch: list[dict[str, Any]], exc: Exception) -> None:
        reason = self._reason(exc)
        with self._cond:
            self._failures += 1
            self._last_error = exc
            attempt = self._failures
            if attempt >= self.max_retries:
                self._drop_queue(attempt, reason)
                return
        delay = self.retry_backoff * 2 ** (attempt - 1)
        logger.warning(
            "prediction log %s: writing %d predictions failed (attempt %d of %d), retrying in %.1fs: %s",
            *(self.url, len(batch), attempt, self.max_retries, delay, reason),
            exc_info=None if isinstance(exc, SQLAlchemyError) else exc,  # not a database error: a bug to trace
        )
        time.sleep(delay)

    def _drop_queue(self, attempts: int, reason: str) -> None:
        """Give up on everything queued, so memory stays bounded while the database is down (lock held)."""
        lost = len(self._queue)
        # Logged before waiters wake, so whoever sees flush() return can already see why rows are missing.
        logger.error(
            "prediction log %s: DROPPED %d predictions after %d failed write attempts: %s",
            *(self.url, lost, attempts, reason),
        )
        self._queue.clear()
        self._dropped_ranges = [*self._dropped_ranges[-99:], (self._done, self._done + lost)]
        self._done += lost
        self._dropped += lost
        self._failures = 0
        self._cond.notify_all()

    def _insert_rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self._engine.begin() as connection:
            for start in range(0, len(rows), self.batch_size):
                connection.execute(self._insert, rows[start : start + self.batch_size])

    # --- feedback and reading

    def attach_feedback(
        self, prediction_id: str, label: str, key_name: str | None = None, correction: bool = False
    ) -> bool:
        """Record the true `label` of a prediction, sent by API key `key_name` (None: a local writer).

        A prediction takes one label: the same label again changes nothing; a different one raises
        FeedbackConflict unless `correction` is True, in which case it replaces the label and the trail in
        `feedback_events` keeps both. Flushes queued rows first, so a just-enqueued prediction is found.
        Returns False when no prediction has this id.
        """
        if not isinstance(label, str) or not label.strip():
            raise PredictionLogError(f"feedback label must be a non-empty string, got {label!r}")
        self._check_open()
        self.flush()
        now = datetime.now(UTC)
        table = predictions
        with self._database_errors(f"attach feedback to {prediction_id!r}"), self._engine.begin() as connection:
            first = connection.execute(
                table.update()
                .where(table.c.prediction_id == prediction_id, table.c.feedback_label.is_(None))
                .values(feedback_label=label, feedback_at=now, feedback_key=key_name)
            )
            if first.rowcount > 0:
                connection.execute(
                    feedback_events.insert().values(prediction_id=prediction_id, label=label, key_name=key_name, at=now)
                )
                return True
            current = connection.execute(
                sa.select(table.c.feedback_label).where(table.c.prediction_id == prediction_id)
            ).first()
            if current is None:
                return False
            previous = current.feedback_label
            if previous == label:
                return True
            if not correction:
                raise FeedbackConflict(
                    f"prediction {prediction_id!r} is already labelled {previous!r}; send correction=true to "
                    f"replace it with {label!r}"
                )
            # Compare-and-set on the label read above: two corrections at once cannot both win silently.
            moved = connection.execute(
                table.update()
                .where(table.c.prediction_id == prediction_id, table.c.feedback_label == previous)
                .values(feedback_label=label, feedback_at=now, feedback_key=key_name)
            )
            if moved.rowcount == 0:
                raise FeedbackConflict(
                    f"prediction {prediction_id!r} was relabelled meanwhile; send the correction again"
                )
            connection.execute(
                feedback_events.insert().values(
                    prediction_id=prediction_id, label=label, previous_label=previous, key_name=key_name, at=now
                )
            )
            return True

    def feedback_trail(self, prediction_id: str) -> list[dict[str, Any]]:
        """Every label sent for a prediction, oldest first: label, previous_label, key_name, at."""
        statement = (
            sa.select(feedback_events)
            .where(feedback_events.c.prediction_id == prediction_id)
            .order_by(feedback_events.c.id)
        )
        with self._database_errors(f"read the labels of {prediction_id!r}"), self._engine.connect() as connection:
            return [
                {key: value for key, value in row._mapping.items() if key not in ("id", "prediction_id")}
                for row in connection.execute(statement)
            ]

    def get(self, prediction_id: str) -> PredictionRecord | None:
        """The stored prediction with this id, or None. Rows still queued by `enqueue` are not visible yet."""
        statement = sa.select(predictions).where(predictions.c.prediction_id == prediction_id)
        with self._database_errors(f"read prediction {prediction_id!r}"), self._engine.connect() as connection:
            row = connection.execute(statement).first()
        return _from_row(row) if row is not None else None

    def window(
        self,
        task: str,
        last_n: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        version: str | None = None,
        labelled_only: bool = False,
    ) -> pd.DataFrame:
        """Predictions of `task`, oldest first, as a DataFrame.

        Args:
            last_n: keep only the most recent `last_n` rows that match the other filters.
            since, until: tz-aware bounds on created_at; `since` inclusive, `until` exclusive.
            version: only predictions made by this version.
            labelled_only: only predictions that received feedback.

        Returns:
            BASE_COLUMNS (created_at and feedback_at as UTC datetimes) plus a float column `prob_<label>`
            per label found in the selected rows (NaN where a row lacks that label). When nothing matches:
            no rows and BASE_COLUMNS only.
        """
        if last_n is not None and last_n < 1:
            raise PredictionLogError(f"last_n must be a positive number of predictions, got {last_n}")
        statement = sa.select(predictions).where(predictions.c.task == task)
        if since is not None:
            statement = statement.where(predictions.c.created_at >= _as_utc(since, "since"))
        if until is not None:
            statement = statement.where(predictions.c.created_at < _as_utc(until, "until"))
        if version is not None:
            statement = statement.where(predictions.c.version == str(version))
        if labelled_only:
            statement = statement.where(predictions.c.feedback_label.is_not(None))
        newest_first = last_n is not None
        order = (predictions.c.created_at, predictions.c.prediction_id)
        statement = statement.order_by(*(c.desc() if newest_first else c.asc() for c in order))
        if last_n is not None:
            statement = statement.limit(last_n)
        with self._database_errors(f"read the window of task {task!r}"), self._engine.connect() as connection:
            records = [_from_row(row) for row in connection.execute(statement)]
        if newest_first:
            records.reverse()
        return _frame(records)

    def count(self, task: str, since: datetime | None = None) -> int:
        """How many predictions of `task` are stored (made at or after `since`, when given)."""
        statement = sa.select(sa.func.count()).select_from(predictions).where(predictions.c.task == task)
        if since is not None:
            statement = statement.where(predictions.c.created_at >= _as_utc(since, "since"))
        with self._database_errors(f"count predictions of task {task!r}"), self._engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())

    def tasks(self) -> list[str]:
        """The tasks that have at least one stored prediction, sorted."""
        statement = sa.select(predictions.c.task).distinct().order_by(predictions.c.task)
        with self._database_errors("list tasks"), self._engine.connect() as connection:
            return list(connection.execute(statement).scalars())

    # --- helpers

    def _check_open(self) -> None:
        if self._closed:
            raise PredictionLogError(f"prediction log {self.url} is closed")

    def _reason(self, error: BaseException) -> str:
        return _reason(error, self._password)

    @contextmanager
    def _database_errors(self, what: str) -> Iterator[None]:
        """Turns a database error inside the block into a one-line PredictionLogError."""
        try:
            yield
        except SQLAlchemyError as exc:
            raise PredictionLogError(f"cannot {what} in {self.url}: {self._reason(exc)}") from None


def _frame(records: list[PredictionRecord]) -> pd.DataFrame:
    if not records:
        return pd.DataFrame(columns=BASE_COLUMNS)
    frame = pd.DataFrame([{column: getattr(record, column) for column in BASE_COLUMNS} for record in records])
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    frame["feedback_at"] = pd.to_datetime(frame["feedback_at"], utc=True)
    frame["confidence"] = frame["confidence"].astype(float)
    labels = sorted({label for record in records for label in record.probabilities})
    probabilities = pd.DataFrame(
        {
            f"{PROBABILITY_PREFIX}{label}": [record.probabilities.get(label, np.nan) for record in records]
            for label in labels
        },
        dtype=float,
    )
    return pd.concat([frame, probabilities], axis=1)
