"""The live prediction log: every served prediction, the true label that may follow it, and windows of both.

The HTTP server and `prefixctl predict --log` write here; the drift monitor and the retraining flow read
windows. Any SQLAlchemy URL works: SQLite by default (one file, WAL mode) and PostgreSQL (`postgresql+psycopg://`).

    with PredictionLog("sqlite:///predictions.db") as log:
        record = PredictionRecord.new("sentiment", "3", "great film", "pos", {"pos": 0.9, "neg": 0.1})
        log.enqueue([record])  # returns at once; a background thread inserts in batches
        log.attach_feedback(record.prediction_id, "pos")
        frame = log.window("sentiment", last_n=500)  # a row per prediction, a prob_<label> column per label

A `PredictionLog` is a `PredictionStore` (prediction_store.py: the tables and the synchronous reads and writes)
with a `BatchWriter` (batch_writer.py: the background thread) in front of its inserts. The values and errors
(`PredictionRecord`, `FeedbackConflict`, `PredictionLogError`...) live in prediction_records.py.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prefix_registry.traffic.batch_writer import BatchWriter
from prefix_registry.traffic.prediction_records import PredictionLogError, PredictionRecord
from prefix_registry.traffic.prediction_store import PredictionStore, to_row

if TYPE_CHECKING:
    from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

# Bounds how long the interpreter may wait at exit for queued rows when the database does not answer.
EXIT_FLUSH_TIMEOUT_S = 30.0

_open_logs: weakref.WeakSet[PredictionLog] = weakref.WeakSet()


@atexit.register
def _flush_open_logs() -> None:
    for log in list(_open_logs):
        if not log.flush(timeout=EXIT_FLUSH_TIMEOUT_S):
            logger.error("prediction log %s: %d predictions not written at exit", log.url, log.pending)


class PredictionLog(PredictionStore):
    """A prediction store whose inserts can also go through a background writer (`enqueue`, `commit`).

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
        super().__init__(url, batch_size)
        self.writer = BatchWriter(
            self.insert_rows,
            name=f"prediction log {self.url}",
            what="predictions",
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            describe=self._reason,
        )
        _open_logs.add(self)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> PredictionLog:
        """The log at `settings.resolved_prediction_log_url` (default: SQLite in the registry home)."""
        from prefix_registry.settings import Settings

        return cls((settings or Settings()).resolved_prediction_log_url, **kwargs)

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Rows enqueued but not yet written (nor dropped)."""
        return self.writer.pending

    @property
    def last_error(self) -> BaseException | None:
        """The error of the latest failed background write; None again once a later write succeeds."""
        return self.writer.last_error

    @property
    def dropped(self) -> int:
        """Rows the background writer gave up on after `max_retries` failed attempts."""
        return self.writer.dropped

    def enqueue(self, records: Iterable[PredictionRecord]) -> int:
        """Queue `records` for the background writer and return at once; returns how many were queued.

        Records are serialised here, so an invalid one raises in the caller rather than in the writer thread.
        """
        return self.writer.enqueue([to_row(record) for record in records])

    def commit(self, records: Iterable[PredictionRecord], timeout: float = 30.0) -> int:
        """Queue `records` and return once the background writer has committed them: an answer sent after this
        survives kill -9 (and power loss: SQLite runs with synchronous=FULL). Concurrent callers share one
        transaction, so the cost is one commit per batch, not per request.

        Raises PredictionLogError when the rows were dropped after failed retries or `timeout` passed first.
        """
        return self.writer.commit([to_row(record) for record in records], timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row enqueued before this call is written (or dropped after failed retries).

        Returns False when `timeout` seconds passed first.
        """
        return self.writer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the background writer and release the database connections. Safe to call twice."""
        if self._closed:
            return
        self.writer.close(timeout)
        _open_logs.discard(self)
        super().close()

    def attach_feedback(
        self,
        prediction_id: str,
        label: str,
        key_name: str | None = None,
        correction: bool = False,
        replace_others: bool = True,
    ) -> bool:
        """As `PredictionStore.attach_feedback`, after flushing queued rows, so a just-enqueued prediction is
        found."""
        self._check_open()
        self.flush()
        return super().attach_feedback(prediction_id, label, key_name, correction, replace_others)
