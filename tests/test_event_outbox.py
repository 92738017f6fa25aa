"""Drift events found while Prefect is down wait in the outbox and are emitted once Prefect answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefix_registry.flows import event_outbox
from prefix_registry.flows.event_outbox import EventOutbox, deliver_pending, emit_drift_event_durably
from prefix_registry.monitoring.drift import DriftVerdict


def test_a_drift_event_found_while_prefect_is_down_is_emitted_when_it_returns(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prefect is down. (Not by pointing PREFECT_API_URL elsewhere: Prefect keeps the URL it first read, and the
    # session's flow tests need the pinned one.)
    monkeypatch.setattr(event_outbox, "prefect_reachable", lambda timeout=10.0: False)
    verdict = DriftVerdict(task="sentiment", version="3", status="drift", reference={"n": 500}, current={"n": 500})
    assert emit_drift_event_durably(verdict, "run-7") is None
    outbox = EventOutbox.from_settings()
    pending = outbox.pending()
    assert [(p["task"], p["version"], p["monitoring_run_id"]) for p in pending] == [("sentiment", "3", "run-7")]
    assert pending[0]["verdict"] == verdict

    emitted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(event_outbox, "prefect_reachable", lambda timeout=10.0: True)
    monkeypatch.setattr(
        event_outbox,
        "emit_drift_event",
        lambda verdict, run_id: emitted.append((verdict.task, verdict.version, run_id)) or "ev-1",
    )
    assert deliver_pending(outbox) == {pending[0]["id"]: "ev-1"}
    assert emitted == [("sentiment", "3", "run-7")] and outbox.pending() == []
    assert deliver_pending(outbox) == {}  # sent once, not again


def test_prefect_reachable_is_false_for_a_closed_port() -> None:
    assert event_outbox.prefect_reachable(timeout=2, api_url="http://127.0.0.1:9/api") is False  # nothing on port 9


def test_an_alias_move_made_while_prefect_is_down_is_emitted_with_the_next_delivery(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefix_registry.flows.alias_events import AliasEvents
    from prefix_registry.registry.aliases import AliasEvent
    from prefix_registry.registry.store import AliasChange

    monkeypatch.setattr(event_outbox, "prefect_reachable", lambda timeout=10.0: False)
    observer = AliasEvents()
    move = AliasEvent(3, "champion", "promote", "1", "2", "ci", "2026-11-29T10:00:00+00:00", reason="better")
    observer(AliasChange("sentiment", "champion", "1", "2", move))
    outbox = EventOutbox.from_settings()
    assert observer.emitted == [] and len(outbox.pending_alias_events()) == 1

    emitted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(event_outbox, "prefect_reachable", lambda timeout=10.0: True)
    monkeypatch.setattr(
        event_outbox,
        "emit_stored_event",
        lambda name, resource, payload: (
            emitted.append((name, resource["prefect.resource.id"], payload["reason"])) or f"ev-{len(emitted)}"
        ),
    )
    sent = deliver_pending(outbox)
    assert emitted == [("prefix.model.promoted", "prefix-registry.model.sentiment", "better")]
    assert list(sent.values()) == ["ev-1"] and outbox.pending_alias_events() == []
    assert deliver_pending(outbox) == {}  # sent once, not again
