"""The test session's Prefect server: one port chosen before anything imports Prefect, one server per module.

Prefect reads its API URL when first imported, and its worker threads keep that value, so conftest.py calls
`pin_prefect_api_url()` at import time and `running_prefect()` later starts the server on that very port.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefix_registry.flows.loopback import HOST, free_port

PREFECT_TEST_PORT = free_port()


def pin_prefect_api_url() -> None:
    """Point Prefect at the session's (not yet started) server, with no analytics and no log shipping."""
    os.environ["PREFECT_API_URL"] = f"http://{HOST}:{PREFECT_TEST_PORT}/api"
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")  # no log shipping to servers that tests stop


@contextmanager
def running_prefect(prefect_home: Path) -> Iterator[str]:
    """A Prefect server on the pinned port with its own SQLite home; yields its API URL."""
    from prefix_registry.flows.local_server import LocalPrefectServer

    with LocalPrefectServer(prefect_home, port=PREFECT_TEST_PORT) as server:
        if os.environ["PREFECT_API_URL"] != server.api_url:
            raise RuntimeError(f"PREFECT_API_URL is {os.environ['PREFECT_API_URL']}, the server is {server.api_url}")
        yield server.api_url
