"""A throwaway PostgreSQL server for integration tests: `initdb` in a temp folder, start on a free port, stop.

    with PostgresServer() as server:
        url = server.create_database("predictions")  # postgresql+psycopg://...@127.0.0.1:PORT/predictions

`running_postgres()` wraps this for a pytest fixture: it skips when PostgreSQL is not installed, unless
PREFIX_REGISTRY_REQUIRE_INTEGRATION=1 makes that a failure.

As root, the server runs as the `postgres` system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from prefix_registry.flows.loopback import free_port
from tests.servers.integration import missing_server

RUN_AS_WHEN_ROOT = "postgres"


class PostgresNotInstalled(RuntimeError):
    """`initdb`, `pg_ctl` or the `postgres` user needed to run them is missing."""


def find_postgres_bin_dir() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`: PG_BIN, the newest /usr/lib/postgresql/*/bin, or PATH."""
    candidates = [Path(os.environ["PG_BIN"])] if os.environ.get("PG_BIN") else []
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major_version, reverse=True)
    candidates += versions
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _major_version(bin_dir: Path) -> int:
    name = bin_dir.parent.name
    return int(name) if name.isdigit() else -1


class PostgresServer:
    """A PostgreSQL cluster in a fresh temp folder, listening on 127.0.0.1 only; deleted on stop.

    Args:
        user, password: the superuser created by initdb; TCP logins need the password (scram-sha-256).
        base_dir: where the temp folder goes; it must be reachable by the `postgres` user when run as root.

    Attributes once started: `port`, `host`, `bin_dir`, `root` (temp folder), `url(database)`.
    """

    def __init__(self, user: str = "prefix", password: str = "prefix-test-pw", base_dir: Path | None = None):
        self.user = user
        self.password = password
        self.base_dir = base_dir
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.bin_dir: Path | None = None
        self.root: Path | None = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "data"

    @property
    def _log_file(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of `database` on this server."""
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def start(self) -> None:
        """initdb and start the server; raises PostgresNotInstalled, or RuntimeError with the server log."""
        self.bin_dir = find_postgres_bin_dir()
        if self.bin_dir is None:
            raise PostgresNotInstalled("PostgreSQL server binaries (initdb, pg_ctl) not found; set PG_BIN")
        owner = self._owner()
        self.root = Path(tempfile.mkdtemp(prefix="prefix-registry-pg-", dir=self.base_dir))
        try:
            if owner is not None:
                os.chown(self.root, owner.pw_uid, owner.pw_gid)
            password_file = self.root / "password"
            password_file.write_text(self.password)
            if owner is not None:
                os.chown(password_file, owner.pw_uid, owner.pw_gid)
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", self.user, f"--pwfile={password_file}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-sync",
            )  # fmt: skip
            self._start_on_free_port()
        except BaseException:
            self.stop()
            raise

    def _start_on_free_port(self, attempts: int = 3) -> None:
        # Another process can grab the probed port before the server binds it: try a new one.
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            settings = {
                "listen_addresses": f"'{self.host}'",
                "port": str(self.port),
                "unix_socket_directories": f"'{self.root}'",
                # A test server: losing it on a crash is fine, waiting for disk is not.
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
            }
            with (self.data_dir / "postgresql.conf").open("a") as conf:  # the last setting wins
                conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self._log_file), "-w", "start")
                return
            except RuntimeError:
                if attempt == attempts:
                    raise

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder; safe to call twice."""
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            except RuntimeError:
                # Raises if even this fails: the folder is then kept, not pulled from under a live server.
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres",
            autocommit=True,
        ) as connection:  # fmt: skip
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def _owner(self) -> pwd.struct_passwd | None:
        """The user the server runs as when this process is root, None when it can run as this user."""
        if os.geteuid() != 0:
            return None
        try:
            owner = pwd.getpwnam(RUN_AS_WHEN_ROOT)
        except KeyError:
            raise PostgresNotInstalled(
                f"running as root needs a {RUN_AS_WHEN_ROOT!r} system user to run PostgreSQL"
            ) from None
        return owner

    def _run(self, program: str, *args: str) -> None:
        assert self.bin_dir is not None
        command = _as_server_user([str(self.bin_dir / program), *args])
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)
        if result.returncode != 0:
            log_tail = self._log_file.read_text()[-2000:] if self._log_file.exists() else ""
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
                + (f"\nserver log:\n{log_tail}" if log_tail else "")
            )


def _as_server_user(command: list[str]) -> list[str]:
    """`command`, run as the `postgres` user when this process is root."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", RUN_AS_WHEN_ROOT, "--", *command]
    return ["su", RUN_AS_WHEN_ROOT, "-s", "/bin/sh", "-c", shlex.join(command)]


def running_postgres() -> Iterator[PostgresServer]:
    """Body of a pytest fixture: yields a started server and stops it afterwards.

    Skips when PostgreSQL is not installed, fails instead when PREFIX_REGISTRY_REQUIRE_INTEGRATION=1.
    """
    server = PostgresServer()
    try:
        server.start()
    except PostgresNotInstalled as exc:
        missing_server(exc, "apt-get install -y postgresql")
    try:
        yield server
    finally:
        server.stop()
