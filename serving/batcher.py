"""Cross-request batching: the rows of concurrent prediction requests share one forward pass.

A request hands its texts and the version it took (`attached`, captured once, so that a hot swap never mixes two
versions inside one request) to `Batcher.submit`, which queues them and awaits their head outputs. One worker
thread, off the event loop, forms each batch:

    wait for a first request; then up to `max_wait_ms` after its arrival for more rows, or until `max_batch` are in
    drop requests whose client is gone or whose deadline has passed, before the forward ever sees them
    take the oldest request, then fill the batch with whole requests: in arrival order when all fit, else those
        nearest in text length to the oldest (the engine pads each row to the longest, so similar lengths waste
        least; the oldest always goes first, so none waits behind more requests than were queued before it)
    split a request across batches only when it alone is larger than max_batch
    run `forward` once (rows of any task, version and method share it); hand each request its own rows back, in
        its order, on its own event loop

The queue is bounded in rows (`max_queue_rows`): a request that does not fit is refused at once (`QueueFull`, a 503
with Retry-After estimated from the queue depth and the measured throughput), so memory stays bounded whatever the
load. A request past its deadline gets `DeadlineExceeded` (also a 503: the server is busy, the client may retry;
504 would claim a gateway). A forward that raises fails only the requests of its batch (`BatchFailed`); the worker
goes on. `stop()` refuses what is still queued (`ShuttingDown`).

    batcher = Batcher(BatchingConfig(max_batch=32, max_wait_ms=2))
    outputs = await batcher.submit(table.current("sentiment"), ["great film", "too long"])  # [tensor, tensor]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Protocol

import torch

from prefix_registry.config_values import field_default
from prefix_registry.errors import ConfigError, first_line
from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.engine import Row, forward
from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

Forward = Callable[[Sequence[Row]], list[torch.Tensor]]


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are batched; `max_batch=1, max_wait_ms=0` serves one text per forward pass, in arrival order.

    The defaults, bounds and meanings are the settings' (`Settings.max_batch`, `max_wait_ms`, `max_queue_rows`,
    `predict_timeout_s`), which `prefixctl serve` reads and its options override.
    """

    max_batch: int = field_default(Settings, "max_batch")
    max_wait_ms: float = field_default(Settings, "max_wait_ms")
    max_queue_rows: int = field_default(Settings, "max_queue_rows")
    timeout_s: float = field_default(Settings, "predict_timeout_s")

    def __post_init__(self) -> None:
        checks = [
            ("max_batch", self.max_batch, 1 <= self.max_batch <= 1024, "an integer from 1 to 1024"),
            ("max_wait_ms", self.max_wait_ms, 0 <= self.max_wait_ms <= 1000, "0 to 1000 ms"),
            ("max_queue_rows", self.max_queue_rows, 1 <= self.max_queue_rows <= 1_000_000, "1 to 1000000 rows"),
            ("timeout_s", self.timeout_s, 0 < self.timeout_s <= 3600, "above 0 and at most 3600 s"),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise ConfigError(f"batching {name}: expected {expected}, got {value!r}")


class Rejection(StrEnum):
    """Why a request was answered without running its rows (the `reason` label of the rejection counter)."""

    QUEUE_FULL = "queue_full"
    DEADLINE = "deadline"
    DISCONNECTED = "disconnected"
    SHUTDOWN = "shutdown"


class BatchRejected(Exception):
    """A request refused or dropped before its rows ran; the server answers 503 with `retry_after` seconds."""

    reason: Rejection

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(BatchRejected):
    reason = Rejection.QUEUE_FULL


class DeadlineExceeded(BatchRejected):
    reason = Rejection.DEADLINE


class ShuttingDown(BatchRejected):
    reason = Rejection.SHUTDOWN


class BatchFailed(Exception):
    """The forward pass of a request's batch raised (a server fault: 500); the next batches run as usual."""


class RequestState(Enum):
    QUEUED = "queued"  # no row taken yet
    RUNNING = "running"  # some rows taken into a batch
    DONE = "done"
    CANCELLED = "cancelled"  # the caller stopped waiting (client gone)
    EXPIRED = "expired"  # its deadline passed
    FAILED = "failed"  # its batch's forward raised, or the batcher stopped

    @property
    def live(self) -> bool:
        return self in (RequestState.QUEUED, RequestState.RUNNING)


class BatcherState(Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class BatchObserver(Protocol):
    """What the batcher reports (serving/metrics.py's `ServingMetrics` turns it into Prometheus series)."""

    def batch_ran(self, rows_by_task: Mapping[str, int], seconds: float) -> None: ...

    def request_waited(self, seconds: float) -> None: ...

    def request_rejected(self, reason: str) -> None: ...


@dataclass(eq=False)
class _Request:
    prefix: AttachedPrefix
    texts: list[str]
    deadline: float  # time.monotonic()
    enqueued: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[torch.Tensor]]
    state: RequestState = RequestState.QUEUED
    taken: int = 0  # rows handed to batches so far
    done: int = 0  # rows computed
    outputs: list[torch.Tensor | None] = field(default_factory=list)

    @property
    def waiting(self) -> int:
        return len(self.texts) - self.taken


@dataclass(frozen=True)
class _Slice:
    """Rows start..stop of one request, taken into a batch."""

    request: _Request
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def _mean_length(texts: Sequence[str]) -> float:
    return sum(len(text) for text in texts) / len(texts)


class Batcher:
    """One worker thread and a queue bounded in rows; see the module docstring.

    Args:
        config: batch size, wait, queue bound and default deadline.
        run: the forward pass (the engine's row-wise `forward`; tests wrap it to watch or hold batches).
        observer: told of each batch, each request's queue wait and each rejection (None: nobody).
    """

    def __init__(
        self, config: BatchingConfig | None = None, run: Forward = forward, observer: BatchObserver | None = None
    ) -> None:
        self.config = config or BatchingConfig()
        self.run = run
        self.observer = observer
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._state = BatcherState.NEW
        self._thread: threading.Thread | None = None
        self._rows_per_second: float | None = None  # smoothed throughput, for Retry-After

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a forward pass (the queue depth)."""
        return self._queued_rows

    def start(self) -> None:
        """Start the worker (a stopped batcher starts again: an app's lifespan may run more than once)."""
        with self._cond:
            self._start_locked()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse every queued request (`ShuttingDown`), let the running batch finish, end the worker."""
        with self._cond:
            self._state = BatcherState.STOPPED
            queued = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
            for request in queued:
                request.state, request.outputs = RequestState.FAILED, []
                self._settle(request, ShuttingDown("the server is stopping: request not run; retry on another one"))
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    async def submit(
        self, attached: AttachedPrefix, texts: Sequence[str], deadline: float | None = None
    ) -> list[torch.Tensor]:
        """Head outputs of `attached` for `texts`, one per text, in order, computed in shared batches.

        Args:
            deadline: `time.monotonic()` by which the rows must have run (default: now + `config.timeout_s`).

        Raises QueueFull, DeadlineExceeded or ShuttingDown (all BatchRejected: answer 503), BatchFailed (500).
        Cancelling the awaiting task (a client gone) withdraws the rows not yet run.
        """
        if not texts:
            return []
        if len(texts) > self.config.max_queue_rows:
            raise ValueError(f"a request of {len(texts)} texts can never fit a queue of {self.config.max_queue_rows}")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        request = _Request(
            prefix=attached,
            texts=list(texts),
            deadline=now + self.config.timeout_s if deadline is None else deadline,
            enqueued=now,
            loop=loop,
            future=loop.create_future(),
            outputs=[None] * len(texts),
        )
        with self._cond:
            refusal = self._admit_locked(request, now)
            if refusal is None:
                self._queue.append(request)
                self._queued_rows += len(texts)
                self._cond.notify_all()
        if refusal is not None:
            self._count(refusal.reason)
            raise refusal
        try:
            async with asyncio.timeout(max(0.0, request.deadline - time.monotonic())):
                return await request.future
        except TimeoutError:
            if self._withdraw(request, RequestState.EXPIRED):
                self._count(Rejection.DEADLINE)
            raise self._late(request) from None
        except asyncio.CancelledError:
            if self._withdraw(request, RequestState.CANCELLED):
                self._count(Rejection.DISCONNECTED)
            raise

    # --- admission and withdrawal (any thread) ----------------------------------------------------------------------
    def _admit_locked(self, request: _Request, now: float) -> BatchRejected | None:
        if self._state is BatcherState.STOPPED:
            return ShuttingDown("the server is stopping: request not run; retry on another one")
        self._start_locked()
        if request.deadline <= now:
            return self._late(request)
        rows = len(request.texts)
        if self._queued_rows + rows > self.config.max_queue_rows:
            return QueueFull(
                f"prediction queue full: {self._queued_rows} of {self.config.max_queue_rows} texts waiting, "
                f"{rows} more do not fit; retry later",
                self._retry_after(),
            )
        return None

    def _withdraw(self, request: _Request, state: RequestState) -> bool:
        """Take a request's unrun rows out of the queue; False when it had already finished."""
        with self._cond:
            return self._withdraw_locked(request, state)

    def _withdraw_locked(self, request: _Request, state: RequestState) -> bool:
        if not request.state.live:
            return False
        if request.waiting:
            self._queued_rows -= request.waiting
            self._queue.remove(request)  # at most max_queue_rows entries: cheap, and its memory is freed now
        request.state, request.outputs = state, []
        return True

    def _late(self, request: _Request) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"request not run within its {request.deadline - request.enqueued:.3g}s deadline: the server is busy; "
            "retry later",
            self._retry_after(),
        )

    def _retry_after(self) -> int:
        """Seconds until the queue has drained at the measured throughput (1 to 60)."""
        rate = self._rows_per_second
        if not rate:
            return 1
        return min(60, max(1, math.ceil(self._queued_rows / rate)))

    # --- the worker ----------------------------------------------------------------------------------------------
    def _start_locked(self) -> None:
        if self._state is BatcherState.RUNNING and self._thread is not None and self._thread.is_alive():
            return
        self._state = BatcherState.RUNNING
        self._thread = threading.Thread(target=self._work, name="prediction-batcher", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            except Exception:  # a fault in the bookkeeping itself: never leave the queue without a worker
                logger.exception("prediction batch failed outside its forward pass")

    def _next_batch(self) -> list[_Slice] | None:
        """Block until a batch is due (full, or its oldest request waited max_wait); None once stopped."""
        max_wait = self.config.max_wait_ms / 1000
        with self._cond:
            while True:
                if self._state is BatcherState.STOPPED or self._thread is not threading.current_thread():
                    return None
                now = time.monotonic()
                for request in [request for request in self._queue if request.deadline <= now]:
                    self._withdraw_locked(request, RequestState.EXPIRED)  # never computed: its caller is answered 503
                    self._count(Rejection.DEADLINE)
                    self._settle(request, self._late(request))
                if not self._queue:
                    self._cond.wait()
                    continue
                due = self._queue[0].enqueued + max_wait
                if self._queued_rows >= self.config.max_batch or now >= due:
                    return self._take_locked(now)
                self._cond.wait(due - now)

    def _take_locked(self, now: float) -> list[_Slice]:
        """Rows for one batch: the oldest request's, then whole requests that fit (see the module docstring)."""
        room = self.config.max_batch
        oldest, *others = self._queue
        batch = [self._slice_locked(oldest, min(oldest.waiting, room), now)]
        room -= len(batch[0])
        if sum(request.waiting for request in others) > room:
            anchor = _mean_length(oldest.texts[batch[0].start : batch[0].stop])
            others.sort(key=lambda request: abs(_mean_length(request.texts) - anchor))  # stable: ties by arrival
        for request in others:
            count = request.waiting
            if 0 < count <= room:
                batch.append(self._slice_locked(request, count, now))
                room -= count
        self._queue = deque(request for request in self._queue if request.waiting)
        return batch

    def _slice_locked(self, request: _Request, count: int, now: float) -> _Slice:
        if request.taken == 0 and self.observer is not None:
            self.observer.request_waited(now - request.enqueued)
        piece = _Slice(request, request.taken, request.taken + count)
        request.taken += count
        request.state = RequestState.RUNNING
        self._queued_rows -= count
        return piece

    def _run_batch(self, batch: list[_Slice]) -> None:
        positions = [(piece.request, index) for piece in batch for index in range(piece.start, piece.stop)]
        rows = [Row(request.texts[index], request.prefix) for request, index in positions]
        started = time.perf_counter()
        try:
            outputs = self.run(rows)
        except Exception as error:
            logger.exception("forward pass of a batch of %d rows failed", len(rows))
            failure = BatchFailed(f"prediction failed in the model: {first_line(error)}")
            for piece in batch:
                if self._withdraw(piece.request, RequestState.FAILED):
                    self._settle(piece.request, failure)
            return
        seconds = time.perf_counter() - started
        with self._cond:
            rate = len(rows) / max(seconds, 1e-6)
            self._rows_per_second = rate if self._rows_per_second is None else 0.8 * self._rows_per_second + 0.2 * rate
            for (request, index), output in zip(positions, outputs, strict=True):
                if request.state.live:  # a request withdrawn meanwhile keeps nothing
                    request.outputs[index] = output
                    request.done += 1
            for piece in batch:
                request = piece.request
                if request.state.live and request.done == len(request.texts):
                    self._settle(request, [output for output in request.outputs if output is not None])
                    request.state, request.outputs = RequestState.DONE, []
        if self.observer is not None:
            self.observer.batch_ran(Counter(row.prefix.task for row in rows), seconds)

    # --- answering (back on each request's event loop) ------------------------------------------------------------
    @staticmethod
    def _settle(request: _Request, outcome: list[torch.Tensor] | BaseException) -> None:
        def resolve() -> None:
            if request.future.done():  # its caller stopped waiting
                return
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # that event loop is closed: nobody waits for the answer
            request.loop.call_soon_threadsafe(resolve)

    def _count(self, reason: Rejection) -> None:
        if self.observer is not None:
            self.observer.request_rejected(reason.value)
