"""A background thread that writes queued rows in batches, retries with backoff and, when the sink keeps failing,
drops what is queued so memory stays bounded. It knows nothing of predictions or databases: it is given a `sink`
(a callable that stores one batch) and a `describe` for error messages.

    writer = BatchWriter(store.insert_rows, name="prediction log sqlite:///p.db", what="predictions")
    writer.enqueue(rows)  # returns at once
    writer.commit(rows)  # returns once these rows are stored (concurrent callers share one batch)
    writer.close()  # flushes first
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from prefix_registry.traffic.prediction_records import PredictionLogError

logger = logging.getLogger(__name__)

Row = dict[str, Any]


class BatchWriter:
    """Queued rows written by one daemon thread, in FIFO order, `batch_size` at a time.

    Args:
        sink: stores one batch (in one transaction); any exception counts as a failed attempt.
        name: how log messages and errors name the destination (e.g. "prediction log sqlite:///p.db").
        what: what a row is, for messages ("predictions").
        batch_size: rows per call of `sink`.
        flush_interval: seconds the thread waits for a batch to fill before writing what it has.
        max_retries: failed attempts before the queued rows are dropped.
        retry_backoff: seconds before the first retry; doubled after each further failure.
        describe: the one-line reason of an error (e.g. with a password masked); defaults to its first line.
    """

    def __init__(
        self,
        sink: Callable[[list[Row]], None],
        *,
        name: str,
        what: str = "rows",
        batch_size: int = 256,
        flush_interval: float = 0.5,
        max_retries: int = 5,
        retry_backoff: float = 0.5,
        describe: Callable[[BaseException], str] | None = None,
    ) -> None:
        if batch_size < 1 or flush_interval < 0 or max_retries < 1 or retry_backoff < 0:
            raise PredictionLogError(
                f"expected batch_size >= 1, flush_interval >= 0, max_retries >= 1, retry_backoff >= 0; got "
                f"{batch_size}, {flush_interval}, {max_retries}, {retry_backoff}"
            )
        self.sink = sink
        self.name = name
        self.what = what
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self._describe = describe or (lambda error: (str(error).strip().splitlines() or [type(error).__name__])[0])

        # Rows stay in _queue until written (or dropped), so `pending` counts the batch being written too.
        self._cond = threading.Condition()
        self._queue: list[Row] = []
        self._enqueued = 0
        self._done = 0  # rows written or dropped; FIFO order makes "_done >= n" mean "the first n are done"
        self._flush_target = 0
        self._dropped = 0
        self._dropped_ranges: list[tuple[int, int]] = []  # (first, last] positions dropped, for commit()
        self._failures = 0
        self._last_error: BaseException | None = None
        self._closed = False
        self._worker: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Rows enqueued but not yet written (nor dropped)."""
        with self._cond:
            return len(self._queue)

    @property
    def last_error(self) -> BaseException | None:
        """The error of the latest failed write; None again once a later write succeeds."""
        with self._cond:
            return self._last_error

    @property
    def dropped(self) -> int:
        """Rows given up on after `max_retries` failed attempts."""
        with self._cond:
            return self._dropped

    @property
    def alive(self) -> bool:
        """Whether the writer thread is running (it starts with the first rows)."""
        return self._worker is not None and self._worker.is_alive()

    @property
    def closed(self) -> bool:
        return self._closed

    def enqueue(self, rows: list[Row]) -> int:
        """Queue `rows` and return at once; returns how many were queued."""
        with self._cond:
            self._check_open()
            if not rows:
                return 0
            self._queue.extend(rows)
            self._enqueued += len(rows)
            self._ensure_worker()
            self._cond.notify_all()
        return len(rows)

    def commit(self, rows: list[Row], timeout: float = 30.0) -> int:
        """Queue `rows` and return once the sink has stored them. Concurrent callers share one batch, so the cost
        is one sink call per batch, not per caller.

        Raises PredictionLogError when the rows were dropped after failed retries or `timeout` passed first.
        """
        with self._cond:
            self._check_open()
            if not rows:
                return 0
            first = self._enqueued
            self._queue.extend(rows)
            self._enqueued += len(rows)
            last = self._enqueued
            self._flush_target = max(self._flush_target, last)
            self._ensure_worker()
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._done >= last, timeout):
                raise PredictionLogError(f"{self.name}: {len(rows)} rows not committed in {timeout:g}s")
            if any(start < last and first < end for start, end in self._dropped_ranges):
                raise PredictionLogError(f"{self.name}: {len(rows)} rows could not be written: {self._reason_text()}")
        return len(rows)

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

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued and stop the thread. Returns False when rows were still unwritten after `timeout`
        (or when already closed by an earlier call, which did the work)."""
        with self._cond:
            if self._closed:
                return True
            self._closed = True
            worker = self._worker
            self._cond.notify_all()
        if worker is not None:
            worker.join(timeout)
            if worker.is_alive():
                logger.error("%s closed with %d %s unwritten", self.name, self.pending, self.what)
                return False
        return True

    # --- the thread

    def _ensure_worker(self) -> None:
        # Also restarts the writer in a forked server worker, where the parent's thread does not exist (lock held).
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._drain, name=f"{self.what}-writer", daemon=True)
            self._worker.start()

    def _drain(self) -> None:
        """Wait for rows, write a batch, retry with backoff, drop after max_retries."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed and nothing left
                self._cond.wait_for(self._batch_due, self.flush_interval)
                batch = self._queue[: self.batch_size]
            try:
                self.sink(batch)
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

    def _on_failure(self, batch: list[Row], exc: Exception) -> None:
        reason = self._describe(exc)
        with self._cond:
            self._failures += 1
            self._last_error = exc
            attempt = self._failures
            if attempt >= self.max_retries:
                self._drop_queue(attempt, reason)
                return
        delay = self.retry_backoff * 2 ** (attempt - 1)
        logger.warning(
            "%s: writing %d %s failed (attempt %d of %d), retrying in %.1fs: %s",
            *(self.name, len(batch), self.what, attempt, self.max_retries, delay, reason),
            exc_info=None if isinstance(exc, SQLAlchemyError) else exc,  # not a database error: a bug to trace
        )
        time.sleep(delay)

    def _drop_queue(self, attempts: int, reason: str) -> None:
        """Give up on everything queued, so memory stays bounded while the sink is down (lock held)."""
        lost = len(self._queue)
        # Logged before waiters wake, so whoever sees flush() return can already see why rows are missing.
        logger.error(
            "%s: DROPPED %d %s after %d failed write attempts: %s", self.name, lost, self.what, attempts, reason
        )
        self._queue.clear()
        self._dropped_ranges = [*self._dropped_ranges[-99:], (self._done, self._done + lost)]
        self._done += lost
        self._dropped += lost
        self._failures = 0
        self._cond.notify_all()

    def _reason_text(self) -> str:
        return self._describe(self._last_error) if self._last_error is not None else "unknown error"

    def _check_open(self) -> None:
        if self._closed:
            raise PredictionLogError(f"{self.name} is closed")
