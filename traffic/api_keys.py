"""Scoped API keys: who may predict, send feedback or administer, and for which tasks.

A key is shown once, when it is created; only its SHA-256 is stored (keys are 256 random bits, so a plain hash
cannot be reversed by guessing). Keys live in the `api_keys` table of a SQLAlchemy database: SQLite in the home by
default, or the configured database (`PREFIX_REGISTRY_API_KEYS_URL`, else the prediction log's), so the server and
`prefixctl keys` on other machines see the same keys.

    store = ApiKeyStore.from_settings()
    created = store.create("labeller", scopes=["feedback"], tasks=["sentiment"])   # created.key: shown once
    store.authenticate(created.key)          # -> ApiKey(name="labeller", ...), or None when unknown / revoked
    store.revoke("labeller")                 # its labels are left out of every later retrain
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from prefix_registry.errors import PrefixRegistryError, first_line
from prefix_registry.traffic.database import create_database_engine, mask_url

if TYPE_CHECKING:
    from prefix_registry.settings import Settings

SCOPES = ("predict", "feedback", "admin")
KEY_PREFIX = "pfx_"
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ApiKeyError(PrefixRegistryError):
    """An API key that cannot be created, found or revoked as asked."""


_metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys",
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.Text, nullable=False),  # comma-separated, from SCOPES
    sa.Column("tasks", sa.Text),  # comma-separated; NULL: every task
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("revoked_at", sa.Text),
)


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never its secret). `tasks` None means every task; `revoked_at` None means active."""

    name: str
    scopes: tuple[str, ...]
    tasks: tuple[str, ...] | None
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str, task: str | None = None) -> bool:
        """True when the key has `scope` (admin has every scope) and, for a task, may act on it."""
        if scope not in self.scopes and "admin" not in self.scopes:
            return False
        return task is None or self.tasks is None or task in self.tasks

    def allows_task(self, task: str) -> bool:
        """True when the key may see or act on `task` (whatever its scopes)."""
        return self.tasks is None or task in self.tasks

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "tasks": list(self.tasks) if self.tasks is not None else None,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "active": self.active,
        }


@dataclass(frozen=True)
class CreatedKey:
    """A new key and its secret: the only moment the secret exists outside the client."""

    api_key: ApiKey
    key: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scopes(text: str) -> tuple[str, ...]:
    """'predict,feedback' -> ('predict', 'feedback'); raises ApiKeyError naming the accepted scopes."""
    scopes = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if not scopes or unknown:
        raise ApiKeyError(f"expected scopes from {', '.join(SCOPES)} (comma-separated), got {text!r}")
    return scopes


def parse_tasks(text: str | None, all_tasks: bool = False) -> tuple[str, ...] | None:
    """'a,b' -> ('a', 'b'); None (every task) only with `all_tasks`, or when no list was given at all.

    Raises ApiKeyError for an empty list (`''`, `','`): it would otherwise read back as every task.
    """
    if all_tasks:
        if text is not None:
            raise ApiKeyError(f"give either --tasks or --all-tasks, not both (got --tasks {text!r})")
        return None
    if text is None:
        return None
    tasks = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not tasks:
        raise ApiKeyError(
            f"expected task names (comma-separated), got {text!r}: a key for no task is refused; --all-tasks "
            "makes a key for every task"
        )
    return tasks


class ApiKeyStore:
    """The `api_keys` table of one database. Raises ApiKeyError (one line, password masked) on any failure."""

    def __init__(self, url: str) -> None:
        self._engine = create_database_engine(url)
        self.url = mask_url(self._engine.url)
        try:
            _metadata.create_all(self._engine)
        except SQLAlchemyError as error:
            self._engine.dispose()
            raise ApiKeyError(f"cannot open the API key store {self.url}: {first_line(error)}") from None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ApiKeyStore:
        from prefix_registry.settings import Settings

        settings = settings or Settings()
        if settings.api_keys_url is None and settings.prediction_log_url is None:
            settings.ensure_home()
        return cls(settings.resolved_api_keys_url)

    def close(self) -> None:
        self._engine.dispose()

    def create(
        self, name: str, scopes: tuple[str, ...] | list[str], tasks: tuple[str, ...] | None = None
    ) -> CreatedKey:
        """A new active key; raises ApiKeyError when the name is invalid or taken (revoked names stay taken)."""
        if not KEY_NAME.fullmatch(name or ""):
            raise ApiKeyError(
                f"invalid key name {name!r}: expected 1-64 letters, digits, '.', '_' or '-', starting with one of the "
                "first two"
            )
        scopes = parse_scopes(",".join(scopes))
        if tasks is not None and not tasks:
            raise ApiKeyError(f"key {name!r} would act on no task: expected task names, or None for every task")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        api_key = ApiKey(name, scopes, tasks, datetime.now(UTC).isoformat(timespec="seconds"))
        row = {
            "name": name,
            "key_hash": hash_key(key),
            "scopes": ",".join(scopes),
            "tasks": ",".join(tasks) if tasks is not None else None,
            "created_at": api_key.created_at,
        }
        try:
            with self._engine.begin() as connection:
                connection.execute(api_keys.insert().values(**row))
        except IntegrityError:
            raise ApiKeyError(f"an API key named {name!r} already exists; choose another name") from None
        except SQLAlchemyError as error:
            raise ApiKeyError(f"cannot store API key {name!r} in {self.url}: {first_line(error)}") from None
        return CreatedKey(api_key, key)

    def all_keys(self) -> list[ApiKey]:
        """Every key ever created (revoked ones included), by name."""
        return [_from_row(row) for row in self._select(sa.select(api_keys).order_by(api_keys.c.name))]

    def revoke(self, name: str) -> ApiKey:
        """Mark a key revoked (from now on it gets 401). Revoking twice keeps the first time."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        statement = api_keys.update().where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
        try:
            with self._engine.begin() as connection:
                connection.execute(statement.values(revoked_at=now))
        except SQLAlchemyError as error:
            raise ApiKeyError(f"cannot revoke API key {name!r} in {self.url}: {first_line(error)}") from None
        found = [key for key in self.all_keys() if key.name == name]
        if not found:
            known = ", ".join(key.name for key in self.all_keys()) or "none"
            raise ApiKeyError(f"no API key named {name!r} (keys: {known})")
        return found[0]

    def list_with_hashes(self) -> list[tuple[str, ApiKey]]:
        """(hash, key) for every key, for a server that checks keys from memory."""
        return [(row.key_hash, _from_row(row)) for row in self._select(sa.select(api_keys))]

    def revoked_names(self) -> set[str]:
        return {key.name for key in self.all_keys() if not key.active}

    def any_exist(self) -> bool:
        """True once any key was created: from then on the server requires one on every request."""
        rows = self._select(sa.select(api_keys.c.name).limit(1))
        return bool(rows)

    def authenticate(self, key: str) -> ApiKey | None:
        """The active key whose secret is `key`, else None."""
        digest = hash_key(key)
        rows = self._select(sa.select(api_keys).where(api_keys.c.key_hash == digest))
        for row in rows:
            if hmac.compare_digest(row.key_hash, digest):
                found = _from_row(row)
                return found if found.active else None
        return None

    def _select(self, statement: sa.Select) -> list[sa.Row]:
        try:
            with self._engine.connect() as connection:
                return list(connection.execute(statement))
        except SQLAlchemyError as error:
            raise ApiKeyError(f"cannot read the API key store {self.url}: {first_line(error)}") from None


def _from_row(row: sa.Row) -> ApiKey:
    return ApiKey(
        name=row.name,
        scopes=tuple(row.scopes.split(",")),
        # NULL is every task; an empty list (stored by earlier versions for `--tasks ''`) is no task, never all.
        tasks=tuple(t for t in row.tasks.split(",") if t) if row.tasks is not None else None,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
