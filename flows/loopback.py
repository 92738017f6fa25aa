"""Servers on loopback, for the demo, the tests and the benchmarks: free ports, stopping a process, uvicorn in a
thread. Each is written once here.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from typing import Any

HOST = "127.0.0.1"


def free_ports(count: int = 1) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listened on a moment ago."""
    probes: list[socket.socket] = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind((HOST, 0))  # all held open at once, so the ports differ
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def free_port() -> int:
    """One TCP port on 127.0.0.1 that nothing listens on (also: a receiver that is down)."""
    return free_ports(1)[0]


def stop_process(process: subprocess.Popen[Any] | None, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `grace` seconds; nothing for a process already gone."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class ThreadedUvicorn:
    """An ASGI app served by uvicorn in a daemon thread on 127.0.0.1.

    Example::

        with ThreadedUvicorn(app) as server:
            httpx.get(f"{server.url}/healthz")
    """

    def __init__(
        self, app: Any, port: int | None = None, log_level: str = "warning", name: str = "uvicorn", **options: Any
    ) -> None:
        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(app, host=HOST, port=self.port, log_level=log_level, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)
        self.app = app

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 60.0) -> ThreadedUvicorn:
        """Start serving; returns once uvicorn accepts connections (RuntimeError after `timeout` seconds)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url} within {timeout:.0f} s")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Ask uvicorn to finish (it runs the app's shutdown, e.g. flushing the prediction log) and join it."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout)

    def __enter__(self) -> ThreadedUvicorn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
