"""A Prefect server on loopback, started and stopped by prefix-registry (for the demo and the tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from prefix_registry.flows.deployments import PrefectUnavailable
from prefix_registry.flows.loopback import free_port, stop_process


class LocalPrefectServer:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME (SQLite), services included (automations).

    Example:
        with LocalPrefectServer(home / "prefect") as server:
            os.environ["PREFECT_API_URL"] = server.api_url
    """

    def __init__(self, prefect_home: Path, port: int | None = None, startup_timeout: float = 120.0) -> None:
        self.prefect_home = prefect_home
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = prefect_home / "server.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
        }

    def start(self) -> LocalPrefectServer:
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
        env = {**os.environ, **self.environment()}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--analytics-off"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrefectUnavailable(f"the Prefect server exited at start (see {self.log_path})")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise PrefectUnavailable(
            f"the Prefect server did not answer within {self.startup_timeout:.0f} s (see {self.log_path})"
        )

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def __enter__(self) -> LocalPrefectServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
