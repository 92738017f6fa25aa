"""Where predictions are stored: the `predictions` and `feedback_events` tables of any SQLAlchemy database, and
the synchronous reads and writes on them (insert, label, window, count). The batched background writer that
sits in front of it for the HTTP server is batch_writer.py; prediction_log.py joins the two.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import SQLAlchemyError

from prefix_registry.kinds import CLASSIFICATION, TaskKind
from prefix_registry.traffic.database import create_database_engine, error_reason, mask_url
from prefix_registry.traffic.prediction_records import (
    FeedbackConflict,
    FeedbackForbidden,
    PredictionLogError,
    PredictionRecord,
    as_utc,
    records_frame,
)


class _UTCDateTime(sa.TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database does with time zones."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value, "timestamp")
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
    sa.Column("latency_ms", sa.Float),
    sa.Index("ix_predictions_task_created_at", "task", "created_at"),
)
# Columns added after the first release: a log created before them gets them on open (ALTER TABLE ADD COLUMN).
_ADDED_COLUMNS = {"key_name": "TEXT", "feedback_key": "TEXT", "latency_ms": "FLOAT"}

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


# One label per (prediction, source): `source` is the API key's name, or "" for a local writer (no key). What a
# retrain reads is derived from these rows and the revoked keys at read time (see `trusted_feedback`), so revoking a
# key takes its labels out and brings back the ones it had replaced.
feedback_labels = sa.Table(
    "feedback_labels",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String(64), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("replaces", sa.Boolean, nullable=False),  # sent as a correction: it outranks earlier labels
    sa.Column("at", _UTCDateTime(), nullable=False),
    sa.UniqueConstraint("prediction_id", "source", name="uq_feedback_labels_prediction_source"),
)
LOCAL_SOURCE = ""  # the source of a label written without an API key


def effective_label(rows: list[tuple[str, str, bool, datetime, int]], revoked: set[str]) -> tuple[str, str] | None:
    """(label, source) a prediction counts as labelled with, from its (source, label, replaces, at, id) rows.

    Labels of revoked keys are left out; of the rest, the newest correction wins, else the earliest label.
    None when no trusted label is left.
    """
    trusted = [row for row in rows if row[0] == LOCAL_SOURCE or row[0] not in revoked]
    if not trusted:
        return None
    corrections = [row for row in trusted if row[2]]
    chosen = max(corrections, key=lambda r: (r[3], r[4])) if corrections else min(trusted, key=lambda r: (r[3], r[4]))
    return chosen[1], chosen[0]


def _add_missing_columns(engine: Engine) -> None:
    present = {column["name"] for column in sa.inspect(engine).get_columns("predictions")}
    with engine.begin() as connection:
        for name, column_type in _ADDED_COLUMNS.items():
            if name not in present:
                connection.execute(sa.text(f"ALTER TABLE predictions ADD COLUMN {name} {column_type}"))


def to_row(record: PredictionRecord) -> dict[str, Any]:
    """A record as the row the `predictions` table stores (probabilities as JSON, times in UTC)."""
    row = asdict(record)
    row["probabilities"] = json.dumps(record.probabilities)
    for column in ("created_at", "feedback_at"):
        if row[column] is not None:
            row[column] = as_utc(row[column], column)
    return row


def from_row(row: sa.Row) -> PredictionRecord:
    """The record a stored row holds."""
    values = dict(row._mapping)
    values["probabilities"] = json.loads(values["probabilities"])
    return PredictionRecord(**values)


def _insert_statement(dialect_name: str) -> sa.Insert:
    """An insert that skips ids already stored, so retrying a batch that did commit never doubles it."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(predictions).on_conflict_do_nothing(index_elements=["prediction_id"])
    if dialect_name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(predictions).on_conflict_do_nothing(index_elements=["prediction_id"])
    return sa.insert(predictions)


class PredictionStore:
    """Predictions stored in the `predictions` table of any SQLAlchemy database; every call is synchronous.

    Args:
        url: SQLAlchemy URL, e.g. `sqlite:////var/lib/prefix/predictions.db` or
            `postgresql+psycopg://user:password@host:5432/db`. The tables are created if missing.
        batch_size: rows per INSERT statement.

    Raises:
        PredictionLogError: the URL is invalid or the database cannot be reached (password masked).
    """

    def __init__(self, url: str, batch_size: int = 256) -> None:
        if batch_size < 1:
            raise PredictionLogError(f"expected batch_size >= 1, got {batch_size}")
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
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def close(self) -> None:
        """Release the database connections. Safe to call twice."""
        self._closed = True
        self._engine.dispose()

    def write(self, records: Iterable[PredictionRecord]) -> int:
        """Insert `records` now, in one transaction; returns how many were given.

        Ids already stored are skipped. Raises PredictionLogError when the database refuses the write.
        """
        self._check_open()
        rows = [to_row(record) for record in records]
        try:
            self.insert_rows(rows)
        except SQLAlchemyError as exc:
            raise PredictionLogError(
                f"cannot write {len(rows)} predictions to {self.url}: {self._reason(exc)}"
            ) from None
        return len(rows)

    def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Insert serialised rows (see `to_row`) in one transaction; database errors propagate as they are."""
        if not rows:
            return
        with self._engine.begin() as connection:
            for start in range(0, len(rows), self.batch_size):
                connection.execute(self._insert, rows[start : start + self.batch_size])

    def attach_feedback(
        self,
        prediction_id: str,
        label: str,
        key_name: str | None = None,
        correction: bool = False,
        replace_others: bool = True,
    ) -> bool:
        """Record the true `label` of a prediction, sent by API key `key_name` (None: a local writer).

        Each key keeps one label per prediction (`feedback_labels`); the prediction's `feedback_label` is the one it
        counts as labelled with. The same label again changes nothing; a different one raises FeedbackConflict
        unless `correction` is True. A correction replaces the key's own label, or another key's when
        `replace_others` (else FeedbackForbidden); the trail in `feedback_events` keeps every label.
        Returns False when no prediction has this id.
        """
        if not isinstance(label, str) or not label.strip():
            raise PredictionLogError(f"feedback label must be a non-empty string, got {label!r}")
        self._check_open()
        now = datetime.now(UTC)
        source = key_name if key_name is not None else LOCAL_SOURCE
        table = predictions
        with self._database_errors(f"attach feedback to {prediction_id!r}"), self._engine.begin() as connection:
            first = connection.execute(
                table.update()
                .where(table.c.prediction_id == prediction_id, table.c.feedback_label.is_(None))
                .values(feedback_label=label, feedback_at=now, feedback_key=key_name)
            )
            if first.rowcount > 0:
                self._keep_label(connection, prediction_id, source, label, replaces=False, at=now)
                connection.execute(
                    feedback_events.insert().values(prediction_id=prediction_id, label=label, key_name=key_name, at=now)
                )
                return True
            current = connection.execute(
                sa.select(table.c.feedback_label, table.c.feedback_key).where(table.c.prediction_id == prediction_id)
            ).first()
            if current is None:
                return False
            previous = current.feedback_label
            if previous == label:
                self._keep_label(connection, prediction_id, source, label, replaces=False, at=now, agree=True)
                return True
            if not correction:
                raise FeedbackConflict(
                    f"prediction {prediction_id!r} is already labelled {previous!r}; send correction=true to "
                    f"replace it with {label!r}"
                )
            if current.feedback_key != key_name and not replace_others:
                raise FeedbackForbidden(
                    f"prediction {prediction_id!r} was labelled {previous!r} by another key; replacing another "
                    f"key's label needs the admin scope (key {key_name!r} may correct only its own labels)"
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
            if previous is not None and current.feedback_key != key_name:
                # A label sent before per-key rows existed keeps its own row, so that revoking this key restores it.
                self._keep_label(
                    connection, prediction_id, current.feedback_key or LOCAL_SOURCE, previous, False, now, agree=True
                )
            self._keep_label(connection, prediction_id, source, label, replaces=True, at=now)
            connection.execute(
                feedback_events.insert().values(
                    prediction_id=prediction_id, label=label, previous_label=previous, key_name=key_name, at=now
                )
            )
            return True

    @staticmethod
    def _keep_label(
        connection: sa.Connection,
        prediction_id: str,
        source: str,
        label: str,
        replaces: bool,
        at: datetime,
        agree: bool = False,
    ) -> None:
        """Write `source`'s one label of the prediction. `agree`: only add a missing row, never change one."""
        mine = (feedback_labels.c.prediction_id == prediction_id) & (feedback_labels.c.source == source)
        existing = connection.execute(sa.select(feedback_labels.c.id).where(mine)).first()
        if existing is None:
            connection.execute(
                feedback_labels.insert().values(
                    prediction_id=prediction_id, source=source, label=label, replaces=replaces, at=at
                )
            )
        elif not agree:
            connection.execute(feedback_labels.update().where(mine).values(label=label, replaces=replaces, at=at))

    def trusted_feedback(self, task: str, since: datetime | None, revoked: set[str]) -> dict[str, tuple[str, str]]:
        """prediction id -> (label, source) of `task`'s labelled predictions (made at or after `since`), as they
        stand with the `revoked` keys' labels left out (see `effective_label`); source None-less: "" is local.

        Predictions labelled before per-key rows existed count with their stored label and key.
        """
        rows = (
            sa.select(
                feedback_labels.c.prediction_id,
                feedback_labels.c.source,
                feedback_labels.c.label,
                feedback_labels.c.replaces,
                feedback_labels.c.at,
                feedback_labels.c.id,
            )
            .join(predictions, predictions.c.prediction_id == feedback_labels.c.prediction_id)
            .where(predictions.c.task == task)
        )
        stored = sa.select(predictions.c.prediction_id, predictions.c.feedback_label, predictions.c.feedback_key).where(
            predictions.c.task == task, predictions.c.feedback_label.is_not(None)
        )
        if since is not None:
            rows = rows.where(predictions.c.created_at >= as_utc(since, "since"))
            stored = stored.where(predictions.c.created_at >= as_utc(since, "since"))
        by_prediction: dict[str, list[tuple[str, str, bool, datetime, int]]] = {}
        with self._database_errors(f"read the labels of task {task!r}"), self._engine.connect() as connection:
            for row in connection.execute(rows):
                by_prediction.setdefault(row.prediction_id, []).append(
                    (row.source, row.label, bool(row.replaces), row.at, row.id)
                )
            legacy = [row for row in connection.execute(stored) if row.prediction_id not in by_prediction]
        found: dict[str, tuple[str, str]] = {}
        for prediction_id, labels in by_prediction.items():
            chosen = effective_label(labels, revoked)
            if chosen is not None:
                found[prediction_id] = chosen
        for row in legacy:
            if row.feedback_key is None or row.feedback_key not in revoked:
                found[row.prediction_id] = (row.feedback_label, row.feedback_key or LOCAL_SOURCE)
        return found

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
        return from_row(row) if row is not None else None

    def window(
        self,
        task: str,
        last_n: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        version: str | None = None,
        labelled_only: bool = False,
        kind: TaskKind = CLASSIFICATION,
    ) -> pd.DataFrame:
        """Predictions of `task`, oldest first, as a DataFrame.

        Args:
            last_n: keep only the most recent `last_n` rows that match the other filters.
            since, until: tz-aware bounds on created_at; `since` inclusive, `until` exclusive.
            version: only predictions made by this version.
            labelled_only: only predictions that received feedback.
            kind: the task's kind, which names the score columns (generation: `output_length`, ...).

        Returns:
            BASE_COLUMNS (created_at and feedback_at as UTC datetimes) plus a float column per score name (the
            kind's name for it; classification: `prob_<label>`) found in the selected rows (NaN where a row lacks
            it). When nothing matches: no rows and BASE_COLUMNS only.
        """
        if last_n is not None and last_n < 1:
            raise PredictionLogError(f"last_n must be a positive number of predictions, got {last_n}")
        statement = sa.select(predictions).where(predictions.c.task == task)
        if since is not None:
            statement = statement.where(predictions.c.created_at >= as_utc(since, "since"))
        if until is not None:
            statement = statement.where(predictions.c.created_at < as_utc(until, "until"))
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
            records = [from_row(row) for row in connection.execute(statement)]
        if newest_first:
            records.reverse()
        return records_frame(records, kind)

    def count(self, task: str, since: datetime | None = None) -> int:
        """How many predictions of `task` are stored (made at or after `since`, when given)."""
        statement = sa.select(sa.func.count()).select_from(predictions).where(predictions.c.task == task)
        if since is not None:
            statement = statement.where(predictions.c.created_at >= as_utc(since, "since"))
        with self._database_errors(f"count predictions of task {task!r}"), self._engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())

    def tasks(self) -> list[str]:
        """The tasks that have at least one stored prediction, sorted."""
        statement = sa.select(predictions.c.task).distinct().order_by(predictions.c.task)
        with self._database_errors("list tasks"), self._engine.connect() as connection:
            return list(connection.execute(statement).scalars())

    def _check_open(self) -> None:
        if self._closed:
            raise PredictionLogError(f"prediction log {self.url} is closed")

    def _reason(self, error: BaseException) -> str:
        return error_reason(error, self._password)

    @contextmanager
    def _database_errors(self, what: str) -> Iterator[None]:
        """Turns a database error inside the block into a one-line PredictionLogError."""
        try:
            yield
        except SQLAlchemyError as exc:
            raise PredictionLogError(f"cannot {what} in {self.url}: {self._reason(exc)}") from None
