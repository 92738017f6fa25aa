"""Specification of the rollout record: one row per task in the alias-history database, SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prefix_registry.registry.rollouts import Rollout, RolloutError, RolloutMode, RolloutStore
from tests.servers.postgres_server import PostgresServer, running_postgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    yield from running_postgres()


def _round_trip(url: str) -> None:
    started = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
    rollout = Rollout("reviews", RolloutMode.SHADOW, 25.0, "3", "2", started, "tester", "shadow 25%")
    store = RolloutStore(url)
    try:
        assert store.get("reviews") is None
        store.put(rollout)
        reopened = RolloutStore(url)  # another process: the record is in the database
        assert reopened.get("reviews") == rollout
        reopened.close()
        store.record_error("reviews", "3")
        store.record_error("reviews", "3")
        store.record_error("reviews", "2")
        assert store.errors("reviews", started - timedelta(minutes=1)) == {"3": 2, "2": 1}
        assert store.errors("reviews", datetime.now(UTC) + timedelta(minutes=1)) == {}
        store.delete("reviews")
        assert store.get("reviews") is None
    finally:
        store.close()


def test_a_rollout_record_round_trips_through_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'locks.db'}")
    assert (tmp_path / "locks-history.db").exists()  # beside the alias history, not in the lock's file


@pytest.mark.integration
def test_a_rollout_record_round_trips_through_postgresql(postgres: PostgresServer) -> None:
    _round_trip(postgres.create_database("rollouts"))


def test_a_rollout_refuses_a_share_outside_0_to_100() -> None:
    with pytest.raises(RolloutError, match="expected 0 to 100, got 101"):
        Rollout("reviews", RolloutMode.CANARY, 101.0, "3", "2", datetime.now(UTC), "tester")
    assert Rollout("reviews", "canary", 5.0, "3", "2", datetime.now(UTC), "tester").mode is RolloutMode.CANARY  # type: ignore[arg-type]
