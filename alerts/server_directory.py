"""The server directory: which `prefixctl serve` processes are running, so that alias moves can be pushed to them.

    ServerPresence (serving/presence.py) --register, heartbeat, deregister--> running_servers
    AliasPush (server_push.py)           --live()--> [RegisteredServer]  --secret()--> the push secret

It lives in the database every promoting process already reaches: the alias lock's (`Settings.resolved_lock_url`).
On PostgreSQL that is the same database; on SQLite a sibling file (`locks.db` -> `locks-servers.db`), because the
alias lock holds SQLite's one write lock for a whole move and a heartbeat must not wait for it. A server that stops
cleanly deletes its row; one killed leaves it behind, and a row whose heartbeat is older than `stale_after_s` is
ignored by `live()` and deleted by `prune()` (every push prunes).

The push secret (HMAC-SHA256, see signing.py) is `Settings.push_secret` when set. Else the first process that needs
one generates 32 random bytes and stores them here, and every other process reads the same row: a local setup works
with no configuration, and whoever can read this database could move the aliases anyway (it holds the alias lock and
history), so the secret tells such a reader nothing more. A SQLite file is made readable by its owner only.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from prefix_registry.database import create_tables, mask_url, open_database_engine
from prefix_registry.errors import PrefixRegistryError, first_line
from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

PUSH_SECRET_NAME = "alias-push"
# A server is stale once it missed this many heartbeats in a row.
MISSED_HEARTBEATS = 3

_metadata = sa.MetaData()
running_servers = sa.Table(
    "running_servers",
    _metadata,
    sa.Column("server_id", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("tasks", sa.Text),  # JSON list of the pinned tasks; NULL: every task with the alias
    sa.Column("alias", sa.String(100), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
)
push_secrets = sa.Table(
    "push_secrets",
    _metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("secret", sa.Text, nullable=False),
)


class ServerDirectoryError(PrefixRegistryError):
    """The server directory's database cannot be opened, read or written."""


@dataclass(frozen=True)
class RegisteredServer:
    """One running server as the directory knows it.

    Attributes:
        server_id: random per process (a restarted server is a new entry).
        url: where it takes pushes, e.g. http://127.0.0.1:8000 (no trailing slash).
        tasks: the tasks it was pinned to, or None for every task that has its alias.
        alias: the alias it serves (`champion` unless `prefixctl serve --alias`).
        last_seen: unix seconds of its latest heartbeat.
    """

    server_id: str
    url: str
    tasks: tuple[str, ...] | None
    alias: str
    started_at: float
    last_seen: float

    def follows(self, task: str) -> bool:
        """Whether a move of one of `task`'s aliases concerns this server."""
        return self.tasks is None or task in self.tasks


def directory_database_url(lock_url: str) -> str:
    """Where the server directory of a lock database at `lock_url` lives: the same database, except for SQLite."""
    parsed = sa.make_url(lock_url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return lock_url
    path = Path(database)
    return parsed.set(database=str(path.with_name(f"{path.stem}-servers{path.suffix or '.db'}"))).render_as_string(
        hide_password=False
    )


class ServerDirectory:
    """The running servers, by id, and the push secret.

    Example:
        directory = ServerDirectory.from_settings(Settings())
        directory.register(RegisteredServer("a1b2", "http://127.0.0.1:8000", None, "champion", now, now))
        directory.live()   # [RegisteredServer(server_id="a1b2", ...)] while its heartbeat is fresh
    """

    def __init__(
        self,
        lock_url: str,
        stale_after_s: float = 30.0,
        configured_secret: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.stale_after_s = stale_after_s
        self._configured_secret = configured_secret
        url = directory_database_url(lock_url)
        self._engine = open_database_engine(
            url, purpose="server directory database", error=ServerDirectoryError, sqlite_timeout_s=timeout_s
        )
        self.url = mask_url(self._engine.url)
        self._create_tables(timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ServerDirectory:
        settings = settings or Settings()
        if settings.lock_url is None and not (settings.prediction_log_url or "").startswith("postgres"):
            settings.ensure_home()
        secret = settings.push_secret.get_secret_value() if settings.push_secret else None
        return cls(
            settings.resolved_lock_url,
            stale_after_s=MISSED_HEARTBEATS * settings.server_heartbeat_s,
            configured_secret=secret or None,
        )

    def _create_tables(self, timeout_s: float) -> None:
        """Create the tables unless they exist (several processes may open a new database at once)."""
        create_tables(
            self._engine,
            _metadata,
            timeout_s,
            lambda error: ServerDirectoryError(
                f"cannot open the server directory database {self.url}: {first_line(error)}"
            ),
        )
        if self._engine.dialect.name == "sqlite" and self._engine.url.database not in (None, "", ":memory:"):
            try:
                os.chmod(str(self._engine.url.database), 0o600)  # it holds the push secret
            except OSError as error:
                logger.warning("could not make %s private: %s", self.url, error)

    def _run(self, what: str, work: sa.Executable | None = None) -> sa.CursorResult:
        try:
            with self._engine.begin() as connection:
                return connection.execute(work) if work is not None else connection.execute(sa.text("SELECT 1"))
        except SQLAlchemyError as error:
            raise ServerDirectoryError(f"cannot {what} in {self.url}: {first_line(error)}") from None

    # -- servers ---------------------------------------------------------------------------------------------------
    def register(self, server: RegisteredServer) -> None:
        """Add `server`, or replace its entry (same id)."""
        row = {
            "server_id": server.server_id,
            "url": server.url.rstrip("/"),
            "tasks": json.dumps(list(server.tasks)) if server.tasks is not None else None,
            "alias": server.alias,
            "started_at": server.started_at,
            "last_seen": server.last_seen,
        }
        try:
            with self._engine.begin() as connection:
                connection.execute(running_servers.delete().where(running_servers.c.server_id == server.server_id))
                connection.execute(running_servers.insert().values(**row))
        except SQLAlchemyError as error:
            raise ServerDirectoryError(
                f"cannot register server {server.url} in {self.url}: {first_line(error)}"
            ) from None

    def heartbeat(self, server_id: str, now: float | None = None) -> bool:
        """Mark `server_id` as alive now; False when it has no entry (pruned while it could not beat: register
        again)."""
        update = (
            running_servers.update()
            .where(running_servers.c.server_id == server_id)
            .values(last_seen=time.time() if now is None else now)
        )
        return self._run(f"record the heartbeat of server {server_id}", update).rowcount == 1

    def deregister(self, server_id: str) -> None:
        self._run(
            f"deregister server {server_id}", running_servers.delete().where(running_servers.c.server_id == server_id)
        )

    def live(self, now: float | None = None) -> list[RegisteredServer]:
        """The servers whose latest heartbeat is within `stale_after_s` of `now`, by URL."""
        since = (time.time() if now is None else now) - self.stale_after_s
        query = sa.select(running_servers).where(running_servers.c.last_seen >= since).order_by(running_servers.c.url)
        rows = self._run("list the running servers", query).mappings().all()
        return [
            RegisteredServer(
                server_id=row["server_id"],
                url=row["url"],
                tasks=tuple(json.loads(row["tasks"])) if row["tasks"] is not None else None,
                alias=row["alias"],
                started_at=row["started_at"],
                last_seen=row["last_seen"],
            )
            for row in rows
        ]

    def prune(self, now: float | None = None) -> int:
        """Delete the stale entries (servers killed without deregistering); returns how many."""
        since = (time.time() if now is None else now) - self.stale_after_s
        return self._run(
            "prune stale servers", running_servers.delete().where(running_servers.c.last_seen < since)
        ).rowcount

    # -- the push secret -------------------------------------------------------------------------------------------
    def secret(self) -> str:
        """The push secret: the configured one, else the stored one, generated and stored by the first caller."""
        if self._configured_secret:
            return self._configured_secret
        query = sa.select(push_secrets.c.secret).where(push_secrets.c.name == PUSH_SECRET_NAME)
        stored = self._run("read the push secret", query).scalar()
        if stored:
            return str(stored)
        try:
            with self._engine.begin() as connection:
                connection.execute(push_secrets.insert().values(name=PUSH_SECRET_NAME, secret=secrets.token_hex(32)))
        except IntegrityError:
            pass  # another process stored one first: that one is read below
        except SQLAlchemyError as error:
            raise ServerDirectoryError(f"cannot store the push secret in {self.url}: {first_line(error)}") from None
        return str(self._run("read the push secret", query).scalar())

    def close(self) -> None:
        self._engine.dispose()
