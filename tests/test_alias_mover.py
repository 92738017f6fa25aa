"""Specification of the alias mover: one move at a time, history entry first, interrupted moves completed, busy
writes retried, observers told of real moves only. Against a real SQLite MLflow store; the fault suite kills real
processes at the same failpoint (tests/faults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prefix_registry.errors import NoRollbackHistory, RegistryError, VersionNotFound
from prefix_registry.registry import alias_mover
from prefix_registry.registry.alias_history_store import history_database_url
from prefix_registry.registry.alias_mover import AliasChange, AliasMover
from prefix_registry.registry.aliases import HISTORY_TAG_PREFIX, AliasEvent, history_from_tags, new_event
from prefix_registry.registry.failpoints import ALIAS_MOVE_AFTER_HISTORY
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.settings import Settings

TASK = "moved"


class Killed(Exception):
    """Stands for the SIGKILL the fault suite sends at a failpoint."""


@pytest.fixture
def registry(home: Path) -> PrefixRegistry:
    """Task `moved` with versions 1, 2 and 3 (no files behind them: moves never read them)."""
    registry = PrefixRegistry(Settings())
    registry.ensure_task(TASK)
    for _ in range(3):
        registry.gateway.create_version(TASK, "s3://nowhere/adapter", None)
    return registry


def _state(registry: PrefixRegistry) -> tuple[str | None, list[tuple[str | None, str]]]:
    history = registry.alias_history(TASK)
    return registry.aliases(TASK).get("champion"), [(e.from_version, e.to_version) for e in history]


def test_the_registry_moves_aliases_through_its_mover_and_shares_its_observers(registry: PrefixRegistry) -> None:
    assert isinstance(registry.alias_mover, AliasMover)
    assert registry.alias_observers is registry.alias_mover.observers
    assert registry.alias_lock is registry.alias_mover.lock


def test_promote_and_rollback_leave_one_entry_per_move_and_tell_observers_of_real_moves(
    registry: PrefixRegistry,
) -> None:
    mover = registry.alias_mover
    told: list[AliasChange] = []
    mover.observers.append(told.append)
    mover.promote(TASK, "1", reason="first")
    mover.promote(TASK, "2", actor="alice")
    unchanged = mover.promote(TASK, "2")
    back = mover.rollback(TASK, reason="worse")
    assert (unchanged.from_version, unchanged.to_version) == ("2", "2")
    assert (back.from_version, back.to_version, back.event.reason) == ("2", "1", "worse")
    assert _state(registry) == ("1", [(None, "1"), ("1", "2"), ("2", "1")])
    assert [(c.from_version, c.to_version) for c in told] == [(None, "1"), ("1", "2"), ("2", "1")]
    assert registry.alias_history(TASK)[1].actor == "alice"
    assert registry.version(TASK, 2).tags["rolled_back"].startswith("from champion to v1 at ")


def test_a_move_is_refused_before_anything_changes(registry: PrefixRegistry) -> None:
    mover = registry.alias_mover
    with pytest.raises(VersionNotFound, match="has no version 9"):
        mover.promote(TASK, "9")
    with pytest.raises(RegistryError, match="invalid alias '1st'"):
        mover.promote(TASK, "1", alias="1st")
    with pytest.raises(NoRollbackHistory, match="alias 'champion' has no earlier version"):
        mover.rollback(TASK)
    assert _state(registry) == (None, [])


def test_a_mover_killed_after_the_history_entry_is_completed_by_the_next_move(
    registry: PrefixRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.promote(TASK, "1")

    def killed_at(name: str) -> None:
        if name == ALIAS_MOVE_AFTER_HISTORY:
            raise Killed(name)

    with monkeypatch.context() as patch:
        patch.setattr(alias_mover, "failpoint", killed_at)
        with pytest.raises(Killed):
            registry.promote(TASK, "2")
    assert _state(registry) == ("1", [(None, "1"), ("1", "2")])  # the entry written, the alias not moved

    change = registry.promote(TASK, "3")
    assert (change.from_version, change.to_version) == ("2", "3")  # v2 first, as its entry said, then v3
    assert _state(registry) == ("3", [(None, "1"), ("1", "2"), ("2", "3")])


def test_an_alias_moved_outside_the_tool_is_kept_not_completed(registry: PrefixRegistry) -> None:
    registry.promote(TASK, "1")
    registry.gateway.set_alias(TASK, "champion", "3")  # e.g. in the MLflow UI
    change = registry.promote(TASK, "2")
    assert (change.from_version, change.to_version) == ("3", "2")


def test_a_busy_store_is_retried_and_a_store_that_stays_busy_is_one_line(
    registry: PrefixRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(alias_mover.time, "sleep", waits.append)
    set_alias = registry.gateway.set_alias
    failures = iter([OSError("database is locked"), OSError("database is locked")])

    def busy_twice(*args: object, **kwargs: object) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        set_alias(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(registry.gateway, "set_alias", busy_twice)
    registry.promote(TASK, "1")
    assert _state(registry) == ("1", [(None, "1")]) and waits == [0.4, 0.8]

    def always_busy(*_args: object, **_kwargs: object) -> None:
        raise OSError("database is locked\nwhile writing")

    monkeypatch.setattr(registry.gateway, "set_alias", always_busy)
    with pytest.raises(RegistryError) as raised:
        registry.promote(TASK, "2")
    assert str(raised.value) == f"cannot move alias champion of {TASK} after 4 attempts: database is locked"


def test_a_registry_error_of_a_write_is_not_retried(registry: PrefixRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def gone(*_args: object, **kwargs: object) -> None:
        calls.append(str(kwargs.get("what")))
        raise RegistryError("gone")

    monkeypatch.setattr(registry.gateway, "set_alias", gone)
    with pytest.raises(RegistryError, match=r"^gone$"):
        registry.promote(TASK, "1")
    assert calls == [f"move alias champion of {TASK}"]
    # The entry was written first; the next move completes the move it records.
    assert _state(registry) == (None, [(None, "1")])


def test_the_history_entry_is_written_before_the_alias(
    registry: PrefixRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[str] = []
    store = registry.alias_mover.history
    append, set_alias = store.append, registry.gateway.set_alias

    def entry(task: str, event: AliasEvent, also: Any = None) -> AliasEvent:
        writes.append(f"entry {event.sequence}")
        return append(task, event, also)

    def alias(task: str, name: str, version: str, **kwargs: str) -> None:
        writes.append(f"alias {name}={version}")
        set_alias(task, name, version, **kwargs)

    monkeypatch.setattr(store, "append", entry)
    monkeypatch.setattr(registry.gateway, "set_alias", alias)
    registry.promote(TASK, "1")
    assert writes == ["entry 1", "alias champion=1"]
    assert store.events(TASK)[0].to_version == "1"
    assert not history_from_tags(registry.task_tags(TASK))  # not a tag of the registered model


def test_a_retried_entry_is_stored_once(registry: PrefixRegistry) -> None:
    store = registry.alias_mover.history
    event = new_event([], "champion", "promote", None, "1", "ann", None)
    assert store.append(TASK, event) == event
    assert store.append(TASK, event) == event  # its first commit went through, its answer was lost
    assert store.events(TASK) == [event]


def test_a_move_of_another_alias_at_the_same_time_takes_the_next_number(registry: PrefixRegistry) -> None:
    store = registry.alias_mover.history
    champion = new_event([], "champion", "promote", None, "1", "ann", None)
    challenger = new_event([], "challenger", "promote", None, "2", "bob", None)  # read the same history
    store.append(TASK, champion)
    stored = store.append(TASK, challenger)
    assert stored.sequence == 2 and stored.to_version == "2"
    assert [(e.sequence, e.alias) for e in store.events(TASK)] == [(1, "champion"), (2, "challenger")]


def test_a_history_kept_in_tags_by_earlier_versions_is_read_then_moved_out_by_the_next_move(
    registry: PrefixRegistry,
) -> None:
    legacy: list[AliasEvent] = []
    for from_version, to_version in ((None, "1"), ("1", "2")):
        legacy.append(new_event(legacy, "champion", "promote", from_version, to_version, "old", "before"))
        registry.gateway.set_task_tag(TASK, legacy[-1].tag_key, legacy[-1].to_tag_value())
    registry.gateway.set_alias(TASK, "champion", "2")
    assert registry.alias_history(TASK) == legacy

    registry.rollback(TASK, reason="worse")

    assert _state(registry) == ("1", [(None, "1"), ("1", "2"), ("2", "1")])
    assert [e.sequence for e in registry.alias_history(TASK)] == [1, 2, 3]
    assert not [key for key in registry.task_tags(TASK) if key.startswith(HISTORY_TAG_PREFIX)]
    assert registry.alias_mover.history.events(TASK)[:2] == legacy


def test_legacy_history_tags_move_out_on_request(registry: PrefixRegistry, cli) -> None:
    event = new_event([], "champion", "promote", None, "1", "old", None)
    registry.gateway.set_task_tag(TASK, event.tag_key, event.to_tag_value())
    result = cli("history", TASK, "--move-from-tags")
    assert result.exit_code == 0, result.stderr
    assert f"{TASK}: 1 history entry moved out of the model's tags" in result.stdout
    assert registry.move_alias_history_out_of_tags(TASK) == 0
    assert registry.alias_history(TASK) == [event]
    assert HISTORY_TAG_PREFIX not in "".join(registry.task_tags(TASK))


def test_the_history_database_of_a_sqlite_lock_is_its_sibling_and_a_server_database_is_shared() -> None:
    assert history_database_url("sqlite:////home/me/locks.db") == "sqlite:////home/me/locks-history.db"
    url = "postgresql+psycopg://u:secret@db:5432/registry"
    assert history_database_url(url) == url
