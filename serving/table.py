"""Which version serves each task, kept in step with the registry's aliases.

`ServingTable.refresh()` asks the registry where each task's alias points and, when it moved, attaches the new
version to the resident base and swaps the task's pointer (one assignment; requests in flight keep the object they
took). When the registry cannot be reached, the last good version keeps serving and the error is reported.
`AliasWatcher` calls `refresh()` every few seconds in a background thread.

While a task has a rollout (registry/rollouts.py), its challenger is attached too, as one `RolloutArms` value that
requests take by reference with the champion (serving/routing.py decides which answers); when the rollout ends, the
next refresh drops it. A challenger that fails to attach leaves the champion serving all traffic (logged).

Each version is attached at the precision the server was asked for (`--precision`): below fp32 only once its own
test split says it loses at most the tolerance there (registry/precision_check.py), else at the next precision up,
with a warning and a fallback counted per task.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefix_registry.errors import AliasNotSet, PrefixRegistryError, TaskNotFound, mask_credentials
from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.precision import CpuSupport, Precision
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.registry.aliases import CHAMPION
from prefix_registry.registry.loading import fetch_verified_adapter
from prefix_registry.registry.precision_check import DEFAULT_TOLERANCE_POINTS, PrecisionChoice, choose_precision
from prefix_registry.registry.regimes import regimes_of
from prefix_registry.registry.rollouts import Rollout
from prefix_registry.registry.store import TASK_NAME, PrefixRegistry
from prefix_registry.registry.versions import PrefixVersion

logger = logging.getLogger(__name__)


class UnknownTask(PrefixRegistryError):
    """A request named a task that has no servable version."""


@dataclass(frozen=True)
class RolloutArms:
    """A running rollout and its attached challenger (the champion is the task's `attached`)."""

    rollout: Rollout
    challenger: AttachedPrefix


@dataclass
class TaskState:
    """What the server knows about one task."""

    task: str
    alias: str
    attached: AttachedPrefix | None = None
    last_checked: datetime | None = None
    last_error: str | None = None
    swaps: int = 0
    precision_choice: PrecisionChoice | None = None
    precision_fallbacks: int = 0  # versions of this task served slower than asked, since start
    arms: RolloutArms | None = None  # the challenger of a running rollout, attached beside the champion

    def summary(self) -> dict[str, Any]:
        attached = self.attached
        return {
            "task": self.task,
            "alias": self.alias,
            "serving_version": attached.version if attached else None,
            "loaded_at": attached.loaded_at.isoformat(timespec="seconds") if attached else None,
            "method": attached.peft_type if attached else None,
            "base": attached.base.name if attached else None,
            "labels": attached.labels if attached else [],
            "swaps": self.swaps,
            "last_checked": self.last_checked.isoformat(timespec="seconds") if self.last_checked else None,
            "registry_ok": self.last_error is None,
            "last_error": self.last_error,
            "rollout": self.arms.rollout.summary() if self.arms else None,
        }


@dataclass(frozen=True)
class Swap:
    task: str
    from_version: str | None
    to_version: str
    seconds: float


class ServingTable:
    """Task -> serving version, following `alias` in the registry."""

    def __init__(
        self,
        registry: PrefixRegistry,
        pool: PrefixPool,
        alias: str = CHAMPION,
        tasks: list[str] | None = None,
        precision: Precision = Precision.FP32,
        tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.alias = alias
        self.precision = precision
        self.tolerance_points = tolerance_points
        if not CpuSupport.detect().supports(precision) and precision is not Precision.AUTO:
            logger.warning(
                "serving at %s on a CPU without fast %s instructions (VNNI, AMX, AVX-512 BF16): maybe slower than fp32",
                precision,
                precision,
            )
        self.pinned_tasks = list(tasks) if tasks else None
        self._states: dict[str, TaskState] = {}
        self._lock = threading.Lock()
        self.registry_ok = True
        self.last_error: str | None = None
        self.swap_listeners: list[Callable[[Swap], None]] = []
        # Called after each refresh, outside its lock (serving/regime_routing.py follows tasks' regimes there).
        self.refresh_listeners: list[Callable[[], None]] = []

    def current(self, task: str) -> AttachedPrefix:
        """The version serving `task` right now, from memory only.

        A request never looks a task up in the registry nor takes the refresh lock: a client's string must not
        make the server wait on the registry, mark it down, or grow this table. Tasks registered after start-up
        are picked up by the watcher's next `refresh()`.
        """
        state = self._states.get(task)
        if state is None or state.attached is None:
            shown = task if TASK_NAME.fullmatch(task) else "(not a task name)"
            raise UnknownTask(f"unknown task {shown!r} (serving: {', '.join(self.served()) or 'none'})")
        return state.attached

    def arms(self, task: str) -> RolloutArms | None:
        """The task's running rollout with its attached challenger, from memory only; None when none runs."""
        state = self._states.get(task)
        return state.arms if state is not None else None

    def served(self) -> list[str]:
        return sorted(task for task, state in self._states.items() if state.attached is not None)

    def states(self) -> list[TaskState]:
        return [self._states[task] for task in sorted(self._states)]

    def refresh(self, tasks: list[str] | None = None, strict: bool = False) -> list[Swap]:
        """Bring tasks in step with the registry; returns the swaps made.

        Args:
            tasks: tasks to check (default: the pinned tasks, else every registry task with the alias set).
            strict: raise registry errors instead of recording them (used once at start-up, where an unreachable
                registry must stop the server with a clear message).
        """
        swaps: list[Swap] = []
        with self._lock:
            try:
                names = tasks or self.pinned_tasks or self.registry.tasks()
                self.registry_ok, self.last_error = True, None
            except Exception as error:
                self._record_registry_error(error)
                if strict:
                    raise
                return swaps
            for task in names:
                state = self._states.setdefault(task, TaskState(task=task, alias=self.alias))
                state.last_checked = datetime.now(UTC)
                try:
                    swap = self._refresh_one(state)
                except (TaskNotFound, AliasNotSet) as error:
                    if isinstance(error, AliasNotSet) and regimes_of(self.registry, task):
                        continue  # served through its regimes' champions (serving/regime_routing.py)
                    state.last_error = str(error)
                    if strict or tasks:
                        raise
                    continue
                except Exception as error:
                    state.last_error = _one_line(error)
                    self._record_registry_error(error, task)
                    if strict:
                        raise
                    continue
                state.last_error = None
                if swap is not None:
                    swaps.append(swap)
                    for listener in self.swap_listeners:
                        listener(swap)
        if self.registry_ok:  # an unreachable registry is not asked again by each listener
            for refreshed in self.refresh_listeners:
                refreshed()
        return swaps

    def _refresh_one(self, state: TaskState) -> Swap | None:
        swap = self._refresh_alias(state)
        if self.alias == CHAMPION:
            self._refresh_rollout(state)
        return swap

    def _refresh_rollout(self, state: TaskState) -> None:
        """Attach the challenger of the task's rollout, drop it when the rollout ended; a challenger that cannot
        be attached leaves the champion answering everything."""
        rollout = self.registry.rollouts.current(state.task)
        if rollout is None:
            if state.arms is not None:
                logger.info("%s: rollout of v%s ended", state.task, state.arms.rollout.challenger_version)
            state.arms = None
            return
        if state.attached is not None and rollout.challenger_version == state.attached.version:
            state.arms = None  # promoted by hand while its rollout runs: one version, nothing to route
            return
        if state.arms is not None and state.arms.rollout == rollout:
            return
        try:
            version = self.registry.version(state.task, rollout.challenger_version)
            adapter_dir, manifest = fetch_verified_adapter(self.registry, version)
            challenger = self.pool.attach(state.task, version.version, adapter_dir, manifest, version.kind)
        except Exception as error:
            logger.warning(
                "%s: rollout challenger v%s not attached, the champion answers all: %s",
                state.task,
                rollout.challenger_version,
                _one_line(error),
            )
            state.arms = None
            return
        # Its own precision check, so the champion's choice stays what /v1/tasks reports.
        state.arms = RolloutArms(rollout, self._at_precision(TaskState(state.task, self.alias), version, challenger))
        logger.info("%s: %s rollout of v%s at %g%%", state.task, rollout.mode, version.version, rollout.share)

    def _refresh_alias(self, state: TaskState) -> Swap | None:
        target = self.registry.aliases(state.task).get(self.alias)
        if target is None:
            raise AliasNotSet(f"task {state.task!r} has no {self.alias!r} alias")
        current = state.attached
        if current is not None and current.version == target:
            return None
        version = self.registry.version(state.task, target)
        adapter_dir, manifest = fetch_verified_adapter(self.registry, version)
        attached = self.pool.attach(state.task, target, adapter_dir, manifest, version.kind)
        attached = self._at_precision(state, version, attached)
        state.attached = attached  # the swap: one reference assignment
        state.swaps += 1 if current is not None else 0
        logger.info(
            "%s: serving version %s (was %s), attached in %.1f ms",
            state.task,
            target,
            current.version if current else "none",
            attached.load_seconds * 1000,
        )
        return Swap(state.task, current.version if current else None, target, attached.load_seconds)

    def _at_precision(self, state: TaskState, version: PrefixVersion, attached: AttachedPrefix) -> AttachedPrefix:
        """`attached` at the fastest precision from the requested one up that its check passes (fp32: no check)."""
        if self.precision is Precision.FP32 or attached.generation is not None:  # generation decodes at fp32
            state.precision_choice = PrecisionChoice(Precision.FP32, Precision.FP32)
            return attached
        choice = choose_precision(self.registry, version, attached, self.precision, self.tolerance_points)
        state.precision_choice = choice
        if choice.fell_back:
            state.precision_fallbacks += 1
            logger.warning(
                "%s: version %s serves at %s, not %s: %s",
                state.task,
                version.version,
                choice.served,
                self.precision,
                "; ".join(choice.reasons),
            )
        return attached.at(choice.served)

    def _record_registry_error(self, error: BaseException, task: str | None = None) -> None:
        self.registry_ok = False
        self.last_error = _one_line(error)
        if task is None:  # the registry itself is unreachable: no task could be checked
            for state in self._states.values():
                state.last_error = self.last_error
        logger.warning(
            "registry check failed%s; serving the last good versions: %s",
            f" for {task}" if task else "",
            self.last_error,
        )


class AliasWatcher:
    """Calls `table.refresh()` every `interval` seconds until stopped."""

    def __init__(self, table: ServingTable, interval: float = 5.0) -> None:
        self.table = table
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alias-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.table.refresh()


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return mask_credentials(f"{type(error).__name__}: {first}")[:300]
