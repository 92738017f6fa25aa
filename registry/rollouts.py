"""Rollouts: a challenger served beside the champion, as a shadow or a canary, recorded next to the aliases.

    start(task, version, mode, share) --> history entry `rollout-start` + rollout row (one transaction), then the
                                          `challenger` alias on version
    end(task, action, reason)         --> history entry (`rollout-stop` / `rollout-rollback` / `rollout-promote`)
                                          + rollout row deleted (one transaction): the champion takes all traffic

A rollout is one row per task of the `rollouts` table, in the database the alias history lives in
(alias_history_store.py: the project's own database, never a visible MLflow tag), so it survives a restart of the
server and of MLflow. Every change is an alias-history entry written through the AliasMover, with actor and reason.
Servers read `Rollouts.current(task)` when they refresh (serving/table.py); the request routing is serving's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from prefix_registry.database import create_tables, mask_url, open_database_engine
from prefix_registry.errors import AliasNotSet, RegistryError, first_line
from prefix_registry.registry.alias_history_store import history_database_url
from prefix_registry.registry.aliases import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from prefix_registry.registry.alias_mover import AliasChange
    from prefix_registry.registry.store import PrefixRegistry


class RolloutMode(StrEnum):
    """How a challenger meets traffic while its rollout runs."""

    SHADOW = "shadow"  # scores a share of requests beside the champion; never answers
    CANARY = "canary"  # answers a share of requests (sticky per routing key)


class RolloutAction(StrEnum):
    """The alias-history action of each rollout change (the `action` column)."""

    START = "rollout-start"
    STOP = "rollout-stop"  # ended by hand
    ROLLBACK = "rollout-rollback"  # ended by the judge: the challenger lost or broke a guardrail
    PROMOTE = "rollout-promote"  # ended by the judge: the challenger became champion


class RolloutError(RegistryError):
    """A rollout that cannot start or end as asked (no champion, one already running, a share out of range)."""


@dataclass(frozen=True)
class Rollout:
    """The rollout running for one task.

    `share` is the percentage of requests the challenger answers (canary) or scores (shadow), 0 to 100.
    """

    task: str
    mode: RolloutMode
    share: float
    challenger_version: str
    champion_version: str
    started_at: datetime
    actor: str
    reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mode, RolloutMode):
            object.__setattr__(self, "mode", RolloutMode(self.mode))
        check_share(self.share)

    def summary(self) -> dict[str, Any]:
        values = asdict(self)
        values["mode"] = self.mode.value
        values["started_at"] = self.started_at.isoformat(timespec="seconds")
        return values


def check_share(share: float) -> float:
    if not 0 <= share <= 100:
        raise RolloutError(f"a rollout's share is a percentage: expected 0 to 100, got {share}")
    return share


_metadata = sa.MetaData()
rollouts = sa.Table(
    "rollouts",
    _metadata,
    sa.Column("task", sa.String(200), primary_key=True),
    sa.Column("mode", sa.String(20), nullable=False),
    sa.Column("share", sa.Float, nullable=False),
    sa.Column("challenger_version", sa.String(40), nullable=False),
    sa.Column("champion_version", sa.String(40), nullable=False),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
)
# Requests a version failed to answer (or, as a shadow, to score) during a rollout: the judge's error-rate guardrail.
rollout_errors = sa.Table(
    "rollout_errors",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task", sa.String(200), nullable=False, index=True),
    sa.Column("version", sa.String(40), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
)


def put_rollout(connection: sa.Connection, rollout: Rollout) -> None:
    """Write `rollout` as its task's running one, in the caller's transaction (the history entry's: see start)."""
    values = rollout.summary()
    values["started_at"] = rollout.started_at.isoformat()
    connection.execute(rollouts.delete().where(rollouts.c.task == rollout.task))
    connection.execute(rollouts.insert().values(**values))


def delete_rollout(connection: sa.Connection, task: str) -> None:
    """End `task`'s running rollout, in the caller's transaction."""
    connection.execute(rollouts.delete().where(rollouts.c.task == task))


class RolloutStore:
    """The running rollout of each task, and the errors counted against its arms.

    Example:
        store = RolloutStore("sqlite:///home/locks.db")
        store.put(rollout); store.get("sentiment")  # Rollout(...)
    """

    def __init__(self, lock_url: str, timeout_s: float = 30.0) -> None:
        self._engine = open_database_engine(
            history_database_url(lock_url), purpose="rollout database", error=RegistryError, sqlite_timeout_s=timeout_s
        )
        self.url = mask_url(self._engine.url)
        create_tables(
            self._engine,
            _metadata,
            timeout_s,
            lambda error: RegistryError(f"cannot open the rollout database {self.url}: {first_line(error)}"),
        )

    def get(self, task: str) -> Rollout | None:
        query = sa.select(rollouts).where(rollouts.c.task == task)
        with self._errors(f"read the rollout of {task}"), self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        if row is None:
            return None
        values = dict(row)
        values["started_at"] = datetime.fromisoformat(values["started_at"])
        return Rollout(**values)

    def put(self, rollout: Rollout) -> None:
        with self._errors(f"record the rollout of {rollout.task}"), self._engine.begin() as connection:
            put_rollout(connection, rollout)

    def delete(self, task: str) -> None:
        with self._errors(f"end the rollout of {task}"), self._engine.begin() as connection:
            delete_rollout(connection, task)

    def record_error(self, task: str, version: str) -> None:
        with self._errors(f"count an error of {task} v{version}"), self._engine.begin() as connection:
            connection.execute(
                rollout_errors.insert().values(task=task, version=version, at=datetime.now(UTC).isoformat())
            )

    def errors(self, task: str, since: datetime) -> dict[str, int]:
        """Version -> errors counted for `task` at or after `since`."""
        query = (
            sa.select(rollout_errors.c.version, sa.func.count())
            .where(rollout_errors.c.task == task, rollout_errors.c.at >= since.astimezone(UTC).isoformat())
            .group_by(rollout_errors.c.version)
        )
        with self._errors(f"count the errors of {task}"), self._engine.connect() as connection:
            return {str(version): int(n) for version, n in connection.execute(query)}

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """A database error inside the block becomes one RegistryError line."""
        try:
            yield
        except SQLAlchemyError as error:
            raise RegistryError(f"cannot {what} in {self.url}: {first_line(error)}") from None


@dataclass(frozen=True)
class RolloutChange:
    """What a rollout start or end did: the rollout, the history entry, and the champion's move if any."""

    rollout: Rollout
    action: RolloutAction
    reason: str | None
    champion_move: AliasChange | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.rollout.task,
            "action": self.action.value,
            "mode": self.rollout.mode.value,
            "share": self.rollout.share,
            "challenger": self.rollout.challenger_version,
            "champion": self.champion_move.to_version if self.champion_move else self.rollout.champion_version,
            "reason": self.reason,
        }


class Rollouts:
    """Starts and ends rollouts through the registry's AliasMover (history entries with actor and reason).

    Example:
        rollouts = Rollouts(registry)
        rollouts.start("sentiment", "3", RolloutMode.CANARY, 30.0)
        rollouts.end("sentiment", RolloutAction.STOP, "by hand")
    """

    def __init__(self, registry: PrefixRegistry) -> None:
        self.registry = registry
        self._store: RolloutStore | None = None

    @property
    def store(self) -> RolloutStore:
        if self._store is None:
            mover = self.registry.alias_mover
            self._store = RolloutStore(self.registry.settings.resolved_lock_url, mover.lock.timeout_s)
        return self._store

    def current(self, task: str) -> Rollout | None:
        return self.store.get(task)

    def start(
        self,
        task: str,
        version: str | int,
        mode: RolloutMode,
        share: float,
        actor: str | None = None,
        reason: str | None = None,
    ) -> RolloutChange:
        """Point `challenger` at `version` and record a rollout of it; RolloutError when one already runs, the task
        has no champion, or `version` is the champion (unknown versions: VersionNotFound)."""
        check_share(share)
        mode = RolloutMode(mode)
        running = self.store.get(task)
        if running is not None:
            raise RolloutError(
                f"task {task!r} already has a {running.mode} rollout of v{running.challenger_version} "
                f"(started {running.started_at:%Y-%m-%d %H:%M} by {running.actor}): stop it first"
            )
        champion = self.registry.aliases(task).get(CHAMPION)
        if champion is None:
            raise AliasNotSet(f"task {task!r} has no champion: a rollout compares a challenger with one")
        target = self.registry.version(task, version).version
        if target == champion:
            raise RolloutError(f"task {task!r}: version {target} is the champion already; expected another version")
        actor = actor or self.registry.settings.actor
        # Mode and share lead the reason, so the history (and the model page's table) says what the rollout was.
        described = f"{mode} {share:g}%" + (f": {reason}" if reason else "")
        rollout = Rollout(task, mode, float(share), target, champion, datetime.now(UTC), actor, described)
        self.store  # noqa: B018 - the rollouts table exists before the entry's transaction writes to it
        # The record is written in the history entry's transaction: a process killed after it leaves the entry and
        # a running rollout together (the `challenger` alias completed by its next move), never one of them.
        self.registry.alias_mover.record(
            task,
            target,
            CHALLENGER,
            RolloutAction.START.value,
            described,
            actor,
            also=partial(put_rollout, rollout=rollout),
        )
        return RolloutChange(rollout, RolloutAction.START, described)

    def end(
        self, task: str, action: RolloutAction, reason: str | None = None, actor: str | None = None
    ) -> RolloutChange:
        """End the task's rollout: PROMOTE moves the champion to the challenger first (through the AliasMover, so
        the promotion alert and events follow); STOP and ROLLBACK leave the champion. RolloutError when none runs."""
        rollout = self.store.get(task)
        if rollout is None:
            raise RolloutError(f"task {task!r} has no rollout running")
        actor = actor or self.registry.settings.actor
        champion_move = None
        if action is RolloutAction.PROMOTE:
            champion_move = self.registry.promote(
                task, rollout.challenger_version, CHAMPION, reason=f"rollout: {reason}", actor=actor
            )
        self.registry.alias_mover.record(
            task,
            rollout.challenger_version,
            CHALLENGER,
            action.value,
            reason,
            actor,
            check=False,
            also=partial(delete_rollout, task=task),
        )
        return RolloutChange(rollout, action, reason, champion_move)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
