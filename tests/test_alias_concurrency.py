"""Concurrent promote / rollback from several processes: one history entry per move, the alias on the last one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alias_movers import check_history, run_movers, seed_task
from tests.servers.mlflow_server import MlflowServer
from tests.servers.postgres_server import PostgresServer, running_postgres


def test_concurrent_moves_on_a_sqlite_store_each_leave_one_entry(home: Path) -> None:
    seed_task("race")
    results = run_movers("race")
    state = check_history("race", results, entries_before=1)
    assert state["problems"] == []
    assert state["moved"] >= 2, state
    assert not [r for r in state["refused"] if "held the lock" in r], state  # they waited for the lock


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    yield from running_postgres()


@pytest.mark.integration
def test_concurrent_moves_through_an_mlflow_server_on_postgres(
    home: Path, postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = postgres.create_database("mlflow_race")
    locks = postgres.create_database("locks_race")
    (tmp_path / "mlflow").mkdir()
    with MlflowServer(root=tmp_path / "mlflow", backend_store_uri=store) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        monkeypatch.setenv("PREFIX_REGISTRY_LOCK_URL", locks)
        assert os.environ["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1")
        seed_task("race")
        results = run_movers("race")
        state = check_history("race", results, entries_before=1)
    assert state["problems"] == []
    assert state["moved"] >= 2, state
    assert not [r for r in state["refused"] if "held the lock" in r], state
