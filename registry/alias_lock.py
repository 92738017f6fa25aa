"""Mutual exclusion for alias moves, across processes and machines.

MLflow 3 has no compare-and-set on aliases or tags, so two `promote` / `rollback` / retrain promotions at once can
both read history entry N, both write N+1 (one is lost) and leave the alias on a version the history does not end
with. The fix is a lock held for the whole read-check-write of a move: one row per task in a `registry_locks` table
of a database every promoting process reaches (`PREFIX_REGISTRY_LOCK_URL`, else the prediction log's PostgreSQL,
else SQLite in the home). Locking is an UPDATE of that row inside a transaction: PostgreSQL holds a row lock,
SQLite a write lock, until commit, and both release it when the holder's connection dies (kill -9 included), so a
crashed mover never leaves the lock held. A database lock was chosen over an optimistic compare-and-set on a
sequence tag because MLflow's tag writes are last-writer-wins: a verify-after-write cannot tell two writers apart
without a second, truly atomic, store anyway.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from prefix_registry.database import mask_url, open_database_engine
from prefix_registry.errors import RegistryError, first_line

_metadata = sa.MetaData()
registry_locks = sa.Table(
    "registry_locks",
    _metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.Text),
    sa.Column("acquired_at", sa.Text),
)


class AliasLockTimeout(RegistryError):
    """Another alias move held the lock longer than the timeout."""


class AliasLock:
    """Named locks in one database. `hold(name)` blocks until the lock is free or `timeout_s` passed."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        # A SQLite writer waits up to the lock timeout for the holder's transaction, then reads "database is locked".
        self._engine = open_database_engine(
            url, purpose="alias lock database", error=RegistryError, sqlite_timeout_s=timeout_s
        )
        self._sqlite = self._engine.dialect.name == "sqlite"
        self.url = mask_url(self._engine.url)
        try:
            self._until_unlocked(lambda: _metadata.create_all(self._engine))
        except SQLAlchemyError as error:
            # Two processes opening a new lock database at once: both saw no table, one created it first.
            if "already exists" in str(error):
                return
            raise RegistryError(f"cannot open the alias lock database {self.url}: {first_line(error)}") from None

    def _until_unlocked(self, step: Callable[[], None]) -> None:
        """Run `step`, again while SQLite answers "database is locked", for up to the lock timeout.

        SQLite's busy wait does not cover every case: a schema read racing another process's first connection, or a
        read transaction that must upgrade to a write while another writer commits, fail at once. Retrying the whole
        short step is the documented cure; PostgreSQL never needs it.
        """
        deadline = time.monotonic() + self.timeout_s
        pause = 0.01
        while True:
            try:
                step()
                return
            except DBAPIError as error:
                if not (self._sqlite and "locked" in str(error.orig).lower()) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Hold lock `name` for the block. Raises AliasLockTimeout (one line) when it stays taken too long."""
        holder = f"{socket.gethostname()}:{os.getpid()}"
        self._ensure_row(name)
        acquired = False
        try:
            with self._engine.connect() as connection, connection.begin():
                if not self._sqlite:
                    connection.execute(sa.text(f"SET LOCAL lock_timeout = {int(self.timeout_s * 1000)}"))
                connection.execute(
                    registry_locks.update()
                    .where(registry_locks.c.name == name)
                    .values(holder=holder, acquired_at=datetime.now(UTC).isoformat(timespec="seconds"))
                )
                acquired = True
                yield
        except DBAPIError as error:
            if acquired:  # a database error of the block itself (e.g. MLflow's own SQLite store): still one line
                raise RegistryError(f"{name}: {first_line(error)}") from None
            text = str(error.orig).lower()
            if "locked" in text or "lock timeout" in text or "canceling statement" in text:
                raise AliasLockTimeout(
                    f"{name}: another alias move held the lock for over {self.timeout_s:g}s; try again"
                ) from None
            raise RegistryError(f"alias lock {self.url}: {first_line(error)}") from None

    def _ensure_row(self, name: str) -> None:
        def insert_if_missing() -> None:
            with self._engine.begin() as connection:
                exists = connection.execute(sa.select(registry_locks.c.name).where(registry_locks.c.name == name))
                if exists.first() is None:
                    connection.execute(registry_locks.insert().values(name=name))

        try:
            self._until_unlocked(insert_if_missing)
        except IntegrityError:
            pass  # another process created it first
        except DBAPIError as error:
            if "locked" in str(error.orig).lower():
                raise AliasLockTimeout(
                    f"{name}: another alias move held the lock for over {self.timeout_s:g}s; try again"
                ) from None
            raise RegistryError(f"alias lock {self.url}: {first_line(error)}") from None

    def close(self) -> None:
        self._engine.dispose()
