"""A throwaway MLflow tracking server for integration tests: `mlflow server` on 127.0.0.1, a SQLite store, proxied
artifacts, all in a temp folder.

    with MlflowServer() as server:
        os.environ["MLFLOW_TRACKING_URI"] = server.url  # http://127.0.0.1:PORT
        server.stop()   # an outage: the port stops answering
        server.start()  # recovery on the same port, with the same store

`running_mlflow()` wraps this for a pytest fixture: it skips when the `mlflow` command is not installed, unless
PREFIX_REGISTRY_REQUIRE_INTEGRATION=1 makes that a failure.

A first start takes 10-30 s on two busy cores (the CLI creates the store's tables, then uvicorn imports the app);
a restart on the existing store 8-10 s; a stop 1-2 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from prefix_registry.flows.loopback import HOST, free_ports
from tests.servers.integration import missing_server

# A Fernet key (url-safe base64 of 32 bytes) for the webhook secrets of the tests' throwaway servers.
WEBHOOK_SECRET_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


class MlflowNotInstalled(RuntimeError):
    """The `mlflow` command is not next to this Python nor on PATH."""


def find_mlflow() -> Path | None:
    """The `mlflow` command of this virtualenv, else the one on PATH."""
    beside = Path(sys.executable).parent / "mlflow"
    if beside.is_file():
        return beside
    on_path = shutil.which("mlflow")
    return Path(on_path) if on_path else None


class MlflowServer:
    """`mlflow server` with a SQLite backend store and artifacts proxied into `root/artifacts` (or the given stores).

    Args:
        root: folder for the store, artifacts and server log; default: a new temp folder, deleted on `close()`.
        port: port to listen on; default: a free one, kept across `stop()`/`start()`.
        start_timeout: seconds to wait for `GET /health` before giving up with the server log.

    Attributes: `url` (http://127.0.0.1:PORT), `port`, `root`, `log_file`, `start_seconds` (of the latest start).
    """

    def __init__(
        self,
        root: Path | None = None,
        port: int | None = None,
        start_timeout: float = 180.0,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
    ) -> None:
        self.port = port or free_ports()[0]
        self.backend_store_uri = backend_store_uri  # e.g. a PostgreSQL URL; default: SQLite under root
        # e.g. s3://bucket/mlflow-artifacts (the S3 variables in os.environ reach the server); default: root/artifacts
        self.artifacts_destination = artifacts_destination
        self.start_timeout = start_timeout
        self._owns_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="prefix-registry-mlflow-"))
        self.start_seconds: float | None = None
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> MlflowServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (on the same port and store as before, after a `stop()`) and wait until it is healthy.

        Raises MlflowNotInstalled, or RuntimeError with the server log when it exits or does not become healthy.
        """
        if self.running:
            return
        mlflow = find_mlflow()
        if mlflow is None:
            raise MlflowNotInstalled("the `mlflow` command was not found next to this Python or on PATH")
        command = [
            str(mlflow), "server",
            "--backend-store-uri", self.backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", self.artifacts_destination or str(self.root / "artifacts"),
            "--host", HOST,
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        env = {
            **os.environ,
            # The job runner (a second process for GenAI evaluation jobs) only slows the start down here.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PYTHONUNBUFFERED": "1",
            # MLflow's webhooks to the tests' loopback receivers (serving/push_receiver.py): http to a private
            # address, a webhook list cached 1 s (not 60: a webhook made after a delivery is seen at once), and a
            # fixed key for the stored webhook secrets, which a restarted server must still decrypt.
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_CACHE_TTL": "1",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": WEBHOOK_SECRET_KEY,
        }
        started = time.perf_counter()
        with self.log_file.open("ab") as log:
            # A session of its own: Ctrl-C in pytest does not reach it, and `stop()` can end its whole group.
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root, start_new_session=True
            )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - started

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"mlflow server exited with status {self._process.returncode} before answering /health"
                        f"\nserver log:\n{self._log_tail()}"
                    )
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server on {self.url} not healthy after {self.start_timeout:.0f} s"
                        f"\nserver log:\n{self._log_tail()}"
                    )
                time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGTERM, which the CLI forwards to uvicorn; SIGKILL after `timeout`). Safe to repeat."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)  # the CLI exits after its uvicorn child
        except subprocess.TimeoutExpired:
            _kill_group(process)

    def close(self) -> None:
        """Stop the server and delete its temp folder (when it made one)."""
        self.stop()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _log_tail(self, chars: int = 3000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group this helper started (its own session), then reap the leader.

    Called before the leader is reaped, so its id (the group's id) cannot yet belong to another process.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def running_mlflow() -> Iterator[MlflowServer]:
    """Body of a pytest fixture: yields a started server and stops it afterwards.

    Skips when `mlflow` is not installed, fails instead when PREFIX_REGISTRY_REQUIRE_INTEGRATION=1.
    """
    server = MlflowServer()
    try:
        server.start()
    except MlflowNotInstalled as exc:
        server.close()
        missing_server(exc, "pip install mlflow")
    except BaseException:
        server.close()
        raise
    try:
        yield server
    finally:
        server.close()
