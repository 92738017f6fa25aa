"""Opening a SQLAlchemy database the way every store of the project does (the prediction log, the API keys, the
alias lock): SQLite in WAL mode with durable commits, PostgreSQL with a connect timeout, errors as one line with
the password masked.

It sits at the import root, under every layer, because both `registry` (the alias lock) and `traffic` (the
prediction log, the API keys) open databases, and the registry may not import traffic. It imports no layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import StaticPool


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


def error_reason(error: BaseException, password: str | None) -> str:
    """The first line of the driver's message, never containing the password."""
    message = str(error.orig if isinstance(error, DBAPIError) else error).strip()
    first = message.splitlines()[0] if message else type(error).__name__
    return first.replace(password, "***") if password else first


def open_database_engine(
    url: str,
    *,
    purpose: str,
    error: type[Exception],
    sqlite_timeout_s: float = 30.0,
) -> Engine:
    """An engine for `url`, the database named `purpose` in messages ("prediction log", "alias lock database").

    Args:
        url: SQLAlchemy URL (`sqlite:///...`, `postgresql+psycopg://...`). A SQLite file's folder is created.
        purpose: what the database is, for the one-line errors.
        error: the exception type raised (the caller's layer's own, e.g. PredictionLogError).
        sqlite_timeout_s: how long a SQLite connection waits for another writer before "database is locked".

    Raises:
        `error`, with the password masked, when the URL is invalid, its folder cannot be made or no driver loads.
    """
    try:
        parsed = sa.make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise error(f"invalid {purpose} URL {mask_url(url)!r}: {exc}") from None
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
                raise error(f"cannot create the folder of {mask_url(parsed)}: {exc}") from None
            kwargs = {"connect_args": {"timeout": sqlite_timeout_s}}
    elif parsed.get_backend_name() == "postgresql":
        kwargs = {"pool_pre_ping": True}
        if "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError, TypeError) as exc:
        raise error(f"cannot open {purpose} {mask_url(parsed)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _enable_wal)
    return engine


def _enable_wal(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the drift monitor read while the server's background thread writes.
    cursor = dbapi_connection.cursor()
    # Switching the mode takes an exclusive lock, and SQLite answers "database is locked" at once (no busy wait) when
    # another connection holds the file: switch only a database that is not in WAL yet (the mode is persistent).
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed row survives power loss too, not only a killed process (an fsync per commit; the writer
    # commits batches, so concurrent requests share it).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def create_tables(
    engine: Engine, metadata: sa.MetaData, timeout_s: float, error: Callable[[SQLAlchemyError], Exception]
) -> None:
    """Create `metadata`'s tables unless they exist. Processes opening a new database at once: one creates them, the
    others may read that they already exist (or, on SQLite, that the file is locked for a moment: retried until
    `timeout_s`). Any other failure raises `error(the SQLAlchemy error)`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            metadata.create_all(engine)
            return
        except SQLAlchemyError as failure:
            text = str(failure).lower()
            if "already exists" in text or "duplicate key" in text:
                return
            if "locked" not in text or time.monotonic() >= deadline:
                raise error(failure) from None
        time.sleep(0.05)
