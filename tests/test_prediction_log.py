"""The prediction log: what is written comes back, feedback, windows and the background writer.

Tests taking the `log` fixture run twice: on SQLite in a temp folder and on a throwaway PostgreSQL server.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.exc import OperationalError

from prefix_registry.flows.loopback import free_port
from prefix_registry.settings import Settings
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.traffic.prediction_records import (
    BASE_COLUMNS,
    FeedbackConflict,
    PredictionLogError,
    PredictionRecord,
)
from tests.servers.postgres_server import PostgresServer, running_postgres

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
PROBS = {"positive": 0.8, "negative": 0.2}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; each test gets its own database on it."""
    yield from running_postgres()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'not-yet-there' / 'predictions.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"log_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def log(log_url: str) -> Iterator[PredictionLog]:
    with PredictionLog(log_url, flush_interval=0.05) as prediction_log:
        yield prediction_log


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'predictions.db'}"


def record(
    minutes: float = 0,
    task: str = "sentiment",
    version: str = "1",
    label: str = "positive",
    probabilities: dict[str, float] | None = None,
    **fields: object,
) -> PredictionRecord:
    """A prediction made `minutes` after T0."""
    return PredictionRecord.new(
        task, version, f"review {uuid.uuid4().hex[:6]}", label, probabilities or PROBS,
        created_at=T0 + timedelta(minutes=minutes), **fields,
    )  # fmt: skip


def count_rows(url: str, task: str) -> int:
    """Counted through a new PredictionLog, so only what reached the database is seen."""
    with PredictionLog(url) as reader:
        return reader.count(task)


# --- records


def test_new_record_fills_id_time_and_confidence() -> None:
    before = datetime.now(UTC)
    made = PredictionRecord.new("sentiment", "3", "ok", "neutral", {"pos": 0.3, "neutral": 0.6, "neg": 0.1})
    assert len(made.prediction_id) == 32 and int(made.prediction_id, 16) >= 0
    assert made.confidence == 0.6
    assert before <= made.created_at <= datetime.now(UTC) and made.created_at.tzinfo is UTC
    assert (made.source, made.request_id, made.feedback_label, made.feedback_at) == ("http", None, None, None)
    assert made.prediction_id != PredictionRecord.new("s", "1", "t", "a", {"a": 1.0}).prediction_id


def test_new_record_rejects_naive_times_and_missing_probabilities() -> None:
    with pytest.raises(PredictionLogError, match="timezone-aware"):
        PredictionRecord.new("s", "1", "t", "a", {"a": 1.0}, created_at=datetime(2025, 1, 1))
    with pytest.raises(PredictionLogError, match="no probabilities"):
        PredictionRecord.new("s", "1", "t", "a", {})


# --- writing and reading back (SQLite and PostgreSQL)


def test_written_record_comes_back_equal_with_utc_times(log: PredictionLog) -> None:
    plus_two = timezone(timedelta(hours=2))
    probabilities = {"positive": 0.123456789012, "negative": 0.876543210988}
    made_at = datetime(2025, 3, 1, 14, 30, 1, 654321, tzinfo=plus_two)
    original = PredictionRecord.new(
        "sentiment", "7", "Très bien — 👍", "positive", probabilities,
        request_id="req-42", source="cli", created_at=made_at,
    )  # fmt: skip
    assert log.write([original]) == 1

    stored = log.get(original.prediction_id)

    assert stored == original
    assert stored.created_at.tzinfo is UTC
    assert stored.created_at == datetime(2025, 3, 1, 12, 30, 1, 654321, tzinfo=UTC)
    assert stored.probabilities == {"positive": 0.123456789012, "negative": 0.876543210988}
    assert stored.confidence == 0.876543210988


def test_get_of_unknown_id_is_none(log: PredictionLog) -> None:
    log.write([record()])
    assert log.get(uuid.uuid4().hex) is None


def test_writing_the_same_record_twice_keeps_one_row(log: PredictionLog) -> None:
    once = record()
    log.write([once])
    log.write([once])
    assert log.count("sentiment") == 1


def test_enqueued_records_are_stored_after_flush(log: PredictionLog) -> None:
    records = [record(minutes=i) for i in range(10)]
    assert log.enqueue(records) == 10

    assert log.flush(timeout=30) is True

    assert log.pending == 0
    assert log.count("sentiment") == 10
    assert [log.get(r.prediction_id) for r in records] == records


def test_a_prediction_takes_one_label_and_only_a_correction_replaces_it(log: PredictionLog) -> None:
    prediction = record(label="positive")
    log.enqueue([prediction])  # not flushed: attach_feedback must find it anyway
    before = datetime.now(UTC)

    assert log.attach_feedback(prediction.prediction_id, "negative", key_name="ann") is True
    first = log.get(prediction.prediction_id)
    assert log.attach_feedback(prediction.prediction_id, "negative", key_name="ann") is True  # same label: no-op
    with pytest.raises(FeedbackConflict, match="already labelled 'negative'"):
        log.attach_feedback(prediction.prediction_id, "positive", key_name="bob")
    assert log.attach_feedback(prediction.prediction_id, "positive", key_name="bob", correction=True) is True
    second = log.get(prediction.prediction_id)
    assert (first.feedback_key, second.feedback_key) == ("ann", "bob")
    trail = log.feedback_trail(prediction.prediction_id)
    assert [(e["label"], e["previous_label"], e["key_name"]) for e in trail] == [
        ("negative", None, "ann"),
        ("positive", "negative", "bob"),
    ]

    assert first.feedback_label == "negative"
    assert before <= first.feedback_at <= datetime.now(UTC) and first.feedback_at.tzinfo is UTC
    assert second.feedback_label == "positive" and second.feedback_at >= first.feedback_at
    assert second.predicted_label == "positive" and second.created_at == prediction.created_at


def test_feedback_on_an_unknown_id_returns_false(log: PredictionLog) -> None:
    log.write([record()])
    assert log.attach_feedback(uuid.uuid4().hex, "positive") is False
    with pytest.raises(PredictionLogError, match="non-empty"):
        log.attach_feedback(uuid.uuid4().hex, " ")


# --- windows


def test_window_is_one_task_oldest_first_with_a_probability_column_per_label(log: PredictionLog) -> None:
    three_way = {"positive": 0.1, "neutral": 0.7, "negative": 0.2}
    made = [record(minutes=2), record(minutes=0), record(minutes=1, label="neutral", probabilities=three_way)]
    log.write([*made, record(minutes=1, task="topics", probabilities={"sport": 1.0})])

    frame = log.window("sentiment")

    assert list(frame.columns) == [*BASE_COLUMNS, "prob_negative", "prob_neutral", "prob_positive"]
    assert list(frame["prediction_id"]) == [made[i].prediction_id for i in (1, 2, 0)]
    assert list(frame["created_at"]) == [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)]
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert list(frame["predicted_label"]) == ["positive", "neutral", "positive"]
    assert list(frame["confidence"]) == [0.8, 0.7, 0.8]
    assert list(frame["prob_positive"]) == [0.8, 0.1, 0.8]
    assert frame["prob_neutral"].iloc[1] == 0.7
    assert math.isnan(frame["prob_neutral"].iloc[0]) and math.isnan(frame["prob_neutral"].iloc[2])
    assert frame["feedback_label"].isna().all() and frame["feedback_at"].isna().all()
    assert set(frame["task"]) == {"sentiment"}


def test_window_last_n_keeps_the_most_recent_still_oldest_first(log: PredictionLog) -> None:
    made = [record(minutes=i) for i in range(6)]
    log.write(made[::-1])

    frame = log.window("sentiment", last_n=3)

    assert list(frame["prediction_id"]) == [r.prediction_id for r in made[3:]]
    assert len(log.window("sentiment", last_n=100)) == 6


def test_window_filters_by_time_version_and_feedback(log: PredictionLog) -> None:
    made = [record(minutes=i, version="1" if i < 3 else "2") for i in range(6)]
    log.write(made)
    for labelled in (made[1], made[4], made[5]):
        log.attach_feedback(labelled.prediction_id, "negative")

    def ids(frame: pd.DataFrame) -> list[str]:
        return list(frame["prediction_id"])

    expected = [r.prediction_id for r in made]
    assert ids(log.window("sentiment", since=T0 + timedelta(minutes=2))) == expected[2:]  # since: inclusive
    assert ids(log.window("sentiment", until=T0 + timedelta(minutes=2))) == expected[:2]  # until: exclusive
    assert ids(log.window("sentiment", version="2")) == expected[3:]
    assert ids(log.window("sentiment", labelled_only=True)) == [expected[1], expected[4], expected[5]]
    assert ids(log.window("sentiment", version="2", labelled_only=True, last_n=1)) == [expected[5]]
    assert ids(log.window("sentiment", since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=4),
                          version="1")) == expected[1:3]  # fmt: skip
    labelled = log.window("sentiment", labelled_only=True)
    assert list(labelled["feedback_label"]) == ["negative"] * 3
    assert labelled["feedback_at"].notna().all()


def test_window_with_no_match_is_empty_with_the_base_columns(log: PredictionLog) -> None:
    log.write([record()])
    for frame in (log.window("unknown-task"), log.window("sentiment", version="9"),
                  log.window("sentiment", labelled_only=True)):  # fmt: skip
        assert frame.empty and list(frame.columns) == BASE_COLUMNS


def test_window_rejects_bad_arguments(log: PredictionLog) -> None:
    with pytest.raises(PredictionLogError, match="last_n"):
        log.window("sentiment", last_n=0)
    with pytest.raises(PredictionLogError, match="timezone-aware"):
        log.window("sentiment", since=datetime(2025, 1, 1))


def test_count_and_tasks(log: PredictionLog) -> None:
    assert log.tasks() == [] and log.count("sentiment") == 0
    log.write([record(minutes=i) for i in range(4)] + [record(task="topics"), record(task="intent")])

    assert log.count("sentiment") == 4
    assert log.count("sentiment", since=T0 + timedelta(minutes=3)) == 1
    assert log.count("topics") == 1
    assert log.tasks() == ["intent", "sentiment", "topics"]


# --- the background writer (SQLite)


def test_sqlite_log_creates_its_folder_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "predictions.db"
    with PredictionLog(f"sqlite:///{path}") as log:
        log.write([record()])
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT count(*) FROM predictions").fetchone()[0] == 1


def test_close_writes_everything_enqueued(sqlite_url: str) -> None:
    # A long interval and a big batch: nothing would be written before close without close flushing.
    log = PredictionLog(sqlite_url, batch_size=10_000, flush_interval=60)
    log.enqueue([record(minutes=i) for i in range(300)])
    log.close()
    log.close()  # twice is harmless

    assert count_rows(sqlite_url, "sentiment") == 300
    with pytest.raises(PredictionLogError, match="closed"):
        log.enqueue([record()])
    with pytest.raises(PredictionLogError, match="closed"):
        log.write([record()])
    with pytest.raises(PredictionLogError, match="closed"):
        log.attach_feedback(uuid.uuid4().hex, "positive")


def test_enqueue_of_5000_records_does_not_wait_for_the_database(
    sqlite_url: str, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    records = [record(minutes=i / 60) for i in range(5000)]
    log = PredictionLog(sqlite_url, flush_interval=0.05)
    # Another writer holds the database's write lock: an enqueue that waited for the database would hang here.
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.perf_counter()
    try:
        queued = [log.enqueue(records[start : start + 250]) for start in range(0, len(records), 250)]
        pending_while_locked = log.pending
    finally:
        enqueue_seconds = time.perf_counter() - started
        blocker.execute("ROLLBACK")
        blocker.close()
    log.close()

    assert queued == [250] * 20
    assert pending_while_locked == 5000  # nothing could be written while the lock was held
    assert (log.pending, log.dropped, log.last_error) == (0, 0, None)
    assert count_rows(sqlite_url, "sentiment") == 5000

    # For comparison only (timings on a shared 2-core machine are too noisy to assert on).
    with PredictionLog(f"sqlite:///{tmp_path / 'sync.db'}") as sync_log:
        started = time.perf_counter()
        sync_log.write([record() for _ in range(5000)])
        record_property("enqueue_5000_s", round(enqueue_seconds, 4))
        record_property("write_5000_s", round(time.perf_counter() - started, 4))


def _failing_inserts(log: PredictionLog, monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    """Make the next `failures` inserts of `log` raise; returns the list of attempted batch sizes."""
    real_insert = log.writer.sink
    attempts: list[int] = []

    def insert(rows: list[dict]) -> None:
        attempts.append(len(rows))
        if len(attempts) <= failures:
            raise OperationalError("INSERT INTO predictions", {}, Exception("disk I/O error"))
        real_insert(rows)

    monkeypatch.setattr(log.writer, "sink", insert)
    return attempts


def test_a_failed_background_write_is_logged_and_retried(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with PredictionLog(sqlite_url, flush_interval=0.01, retry_backoff=0.01) as log:
        attempts = _failing_inserts(log, monkeypatch, failures=2)
        with caplog.at_level(logging.WARNING, logger="prefix_registry.traffic.batch_writer"):
            log.enqueue([record(minutes=i) for i in range(7)])
            assert log.flush(timeout=30) is True

        assert attempts == [7, 7, 7]
        assert (log.pending, log.dropped, log.last_error) == (0, 0, None)
        assert log.count("sentiment") == 7
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "attempt 1 of 5" in warnings[0] and "disk I/O error" in warnings[0]


def test_writes_that_keep_failing_are_dropped_loudly_and_the_writer_survives(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with PredictionLog(sqlite_url, flush_interval=0.01, max_retries=3, retry_backoff=0.01) as log:
        attempts = _failing_inserts(log, monkeypatch, failures=3)
        with caplog.at_level(logging.WARNING, logger="prefix_registry.traffic.batch_writer"):
            log.enqueue([record(minutes=i) for i in range(7)])
            assert log.flush(timeout=30) is True

        assert len(attempts) == 3
        assert (log.pending, log.dropped) == (0, 7)
        assert isinstance(log.last_error, OperationalError)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "DROPPED 7 predictions after 3 failed write attempts" in errors[0]

        kept = record(minutes=10)
        log.enqueue([kept])  # the database works again: the same writer thread stores new rows
        assert log.flush(timeout=30) is True
        assert log.get(kept.prediction_id) == kept
        assert (log.count("sentiment"), log.last_error, log.dropped) == (1, None, 7)
        assert log.writer.alive


def test_enqueued_records_survive_a_clean_exit_without_close(sqlite_url: str) -> None:
    script = textwrap.dedent(
        """
        import sys
        from prefix_registry.traffic.prediction_log import PredictionLog
        from prefix_registry.traffic.prediction_records import PredictionRecord

        log = PredictionLog(sys.argv[1], batch_size=10_000, flush_interval=60)
        log.enqueue([PredictionRecord.new("exit", "1", f"t{i}", "a", {"a": 1.0}) for i in range(250)])
        print(log.pending)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", script, sqlite_url]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "250"  # still queued when the script ended: atexit wrote them
    assert count_rows(sqlite_url, "exit") == 250


# --- settings and errors


def test_from_settings_uses_the_registry_home_or_the_configured_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFIX_REGISTRY_PREDICTION_LOG_URL", raising=False)
    with PredictionLog.from_settings(Settings(home=tmp_path / "home")) as log:
        log.write([record()])
    assert count_rows(f"sqlite:///{tmp_path / 'home' / 'predictions.db'}", "sentiment") == 1

    monkeypatch.setenv("PREFIX_REGISTRY_PREDICTION_LOG_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    with PredictionLog.from_settings() as log:
        assert log.url == f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert (tmp_path / "elsewhere.db").exists()


def test_unreachable_database_is_one_line_with_the_password_masked(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(PredictionLogError) as raised:
        PredictionLog(f"postgresql+psycopg://alice:s3cret-pw@127.0.0.1:{port}/predictions")

    message = str(raised.value)
    assert message.startswith(f"cannot open prediction log postgresql+psycopg://alice:***@127.0.0.1:{port}/")
    assert "\n" not in message and "s3cret-pw" not in message
    assert "s3cret-pw" not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg//alice:s3cret-pw@db.internal/predictions",  # missing ':'
        "postgresql+psycopg://alice:s3cret-pw@db.internal:notaport/predictions",
        "nosuchdatabase://alice:s3cret-pw@db.internal/predictions",
    ],
)
def test_invalid_url_is_refused_with_the_password_masked(url: str) -> None:
    with pytest.raises(PredictionLogError) as raised:
        PredictionLog(url)
    message = str(raised.value)
    assert "alice:***@db.internal" in message and "s3cret-pw" not in message and "\n" not in message


def test_a_database_error_while_reading_is_one_prediction_log_error(sqlite_url: str) -> None:
    with PredictionLog(sqlite_url) as log:
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as other:
            other.execute("DROP TABLE predictions")
        with pytest.raises(PredictionLogError, match=r"cannot count predictions of task 'sentiment' .*no such table"):
            log.count("sentiment")
        with pytest.raises(PredictionLogError, match="cannot write 1 predictions"):
            log.write([record()])


@pytest.mark.parametrize("settings", [{"batch_size": 0}, {"flush_interval": -1}, {"max_retries": 0}])
def test_writer_settings_out_of_range_are_refused(sqlite_url: str, settings: dict) -> None:
    with pytest.raises(PredictionLogError, match="expected batch_size >= 1"):
        PredictionLog(sqlite_url, **settings)


# --- PostgreSQL only


@pytest.mark.integration
def test_postgres_wrong_password_is_refused_without_showing_it(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("postgres").replace(postgres_server.password, "wrong-pw-123")
    with pytest.raises(PredictionLogError) as raised:
        PredictionLog(url)
    message = str(raised.value)
    assert "password authentication failed" in message
    assert "wrong-pw-123" not in message and "***@127.0.0.1" in message


@pytest.mark.integration
def test_postgres_session_time_zone_does_not_change_the_times_read(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database(f"log_{uuid.uuid4().hex[:12]}")
    made = record(minutes=5)
    with PredictionLog(url + "?options=-c%20TimeZone%3DAsia/Tokyo") as tokyo:
        tokyo.write([made])
        stored = tokyo.get(made.prediction_id)
        frame = tokyo.window("sentiment")
    assert stored.created_at.tzinfo is UTC and stored.created_at == T0 + timedelta(minutes=5)
    assert frame["created_at"].iloc[0] == pd.Timestamp(T0 + timedelta(minutes=5))
    assert str(frame["created_at"].dt.tz) == "UTC"


def test_commit_returns_only_once_the_rows_are_stored(log: PredictionLog) -> None:
    records = [record() for _ in range(20)]
    assert log.commit(records) == 20
    assert log.pending == 0 and [log.get(r.prediction_id) for r in records] == records


def test_commit_raises_when_the_rows_were_dropped(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    log = PredictionLog(sqlite_url, max_retries=2, retry_backoff=0.01)
    monkeypatch.setattr(log.writer, "sink", lambda rows: (_ for _ in ()).throw(RuntimeError("disk gone")))
    try:
        with pytest.raises(PredictionLogError, match="could not be written"):
            log.commit([record()], timeout=10)
    finally:
        monkeypatch.undo()
        log.close()


def test_a_log_created_before_key_columns_gains_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE predictions (prediction_id VARCHAR(64) PRIMARY KEY, created_at DATETIME NOT NULL, "
            "task TEXT NOT NULL, version TEXT NOT NULL, text TEXT NOT NULL, predicted_label TEXT NOT NULL, "
            "probabilities TEXT NOT NULL, confidence FLOAT NOT NULL, request_id TEXT, source TEXT NOT NULL, "
            "feedback_label TEXT, feedback_at DATETIME)"
        )
    with PredictionLog(f"sqlite:///{path}") as log:
        made = record()
        made.key_name = "app"
        log.write([made])
        assert log.get(made.prediction_id).key_name == "app"
