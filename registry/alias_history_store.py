"""Alias history in the project's own database: one row per alias move, out of the registered model's tags.

    AliasMover --append(task, event)--> alias_history (task, sequence) --events(task)--> AliasEvent, oldest first

MLflow's UI shows every registered-model tag, so the history is kept in the database the alias lock uses
(`Settings.resolved_lock_url`: PostgreSQL when one is shared, else SQLite in the home) and shown to people only as
the model description's table (model_history.py). A SQLite database takes one writer at a time, and the alias lock
holds that write lock for the whole move; so on SQLite the history lives in a sibling file of the lock database
(`locks.db` -> `locks-history.db`), whose commit does not wait for the lock's. On PostgreSQL both tables share the
database: the lock is a row lock, which does not block the history's inserts.

An append commits before it returns, so an entry written before the alias move survives a mover killed right after
it (the next move completes that move, see alias_mover.py). Appending the same entry again (a retry whose first
commit went through) is a no-op. Histories written as tags by earlier versions (aliases.py) are still read: see
`merged_history`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from prefix_registry.database import create_tables, mask_url, open_database_engine
from prefix_registry.errors import RegistryError, first_line
from prefix_registry.registry.aliases import AliasEvent

_metadata = sa.MetaData()
alias_history = sa.Table(
    "alias_history",
    _metadata,
    sa.Column("task", sa.String(200), primary_key=True),
    sa.Column("sequence", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("alias", sa.String(100), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("from_version", sa.String(40)),
    sa.Column("to_version", sa.String(40), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("reason", sa.Text),
)


def history_database_url(lock_url: str) -> str:
    """Where the alias history of a lock database at `lock_url` lives: the same database, except for SQLite."""
    parsed = sa.make_url(lock_url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return lock_url
    path = Path(database)
    return parsed.set(database=str(path.with_name(f"{path.stem}-history{path.suffix or '.db'}"))).render_as_string(
        hide_password=False
    )


class AliasHistoryStore:
    """The alias moves of every task, by task and sequence number.

    Example:
        store = AliasHistoryStore("sqlite:///home/locks.db")
        store.append("sentiment", event)
        store.events("sentiment")  # [AliasEvent(sequence=1, ...), ...]
    """

    def __init__(self, lock_url: str, timeout_s: float = 30.0) -> None:
        url = history_database_url(lock_url)
        self._engine = open_database_engine(
            url, purpose="alias history database", error=RegistryError, sqlite_timeout_s=timeout_s
        )
        self.url = mask_url(self._engine.url)
        self._create_table(timeout_s)

    def _create_table(self, timeout_s: float) -> None:
        """Create the table unless it exists (several processes may open a new database at once)."""
        create_tables(
            self._engine,
            _metadata,
            timeout_s,
            lambda error: RegistryError(f"cannot open the alias history database {self.url}: {first_line(error)}"),
        )

    def events(self, task: str) -> list[AliasEvent]:
        """The task's recorded moves, oldest first."""
        query = sa.select(alias_history).where(alias_history.c.task == task).order_by(alias_history.c.sequence)
        try:
            with self._engine.connect() as connection:
                rows = connection.execute(query).mappings().all()
        except SQLAlchemyError as error:
            raise RegistryError(f"read the alias history of {task} from {self.url}: {first_line(error)}") from None
        return [AliasEvent(**{key: value for key, value in row.items() if key != "task"}) for row in rows]

    def append(self, task: str, event: AliasEvent, also: Callable[[sa.Connection], object] | None = None) -> AliasEvent:
        """Record `event`, committed when this returns; returns the entry as stored. `also` writes more rows of this
        database in the same transaction (a rollout's record: both are committed, or neither).

        The same entry again (a retry whose first commit went through) is a no-op. When another entry already has
        its sequence number (a move of another alias of the task, under that alias's lock, at the same time), it is
        stored under the next free number instead. Database errors other than that are raised as they are, so the
        mover's retry sees a busy SQLite file.
        """
        while True:
            try:
                with self._engine.begin() as connection:
                    connection.execute(alias_history.insert().values(task=task, **_event_row(event)))
                    if also is not None:
                        also(connection)
                return event
            except IntegrityError:
                later = [found for found in self.events(task) if found.sequence >= event.sequence]
                same = [found for found in later if dataclasses.replace(found, sequence=event.sequence) == event]
                if same:
                    return same[0]
                if not later:
                    raise RegistryError(
                        f"alias history of {task}: expected entry {event.sequence} to be taken, found no entry there"
                    ) from None
                event = dataclasses.replace(event, sequence=later[-1].sequence + 1)

    def close(self) -> None:
        self._engine.dispose()


def _event_row(event: AliasEvent) -> dict[str, object]:
    return {
        "sequence": event.sequence,
        "alias": event.alias,
        "action": event.action,
        "from_version": event.from_version,
        "to_version": event.to_version,
        "actor": event.actor,
        "at": event.at,
        "reason": event.reason,
    }


def merged_history(legacy: list[AliasEvent], stored: list[AliasEvent]) -> list[AliasEvent]:
    """The legacy tag entries and the database's, oldest first; the database's entry wins a shared sequence."""
    by_sequence = {event.sequence: event for event in legacy}
    by_sequence.update({event.sequence: event for event in stored})
    return [by_sequence[sequence] for sequence in sorted(by_sequence)]
