"""Drift events found while Prefect is down wait in the outbox and are emitted once Prefect answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefix_registry.flows import event_outbox
from prefix_registry.flows.event_outbox import DriftEventOutbox, deliver_pending, emit_drift_event_durably


def test_a_drift_event_found_while_prefect_is_down_is_emitted_when_it_returns(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens on port 9: Prefect is down
    verdict = {"status": "drift", "drifted_signals": ["text_length"]}
    assert emit_drift_event_durably("sentiment", "3", verdict) is None
    outbox = DriftEventOutbox.from_settings()
    pending = outbox.pending()
    assert [(p["task"], p["version"], p["verdict"]) for p in pending] == [("sentiment", "3", verdict)]

    emitted: list[tuple[str, str]] = []
    monkeypatch.setattr(event_outbox, "prefect_reachable", lambda timeout=5.0: True)
    monkeypatch.setattr(
        event_outbox, "emit_drift_event", lambda task, version, verdict: emitted.append((task, version)) or "ev-1"
    )
    assert deliver_pending(outbox) == {pending[0]["id"]: "ev-1"}
    assert emitted == [("sentiment", "3")] and outbox.pending() == []
    assert deliver_pending(outbox) == {}  # sent once, not again


def test_prefect_reachable_is_false_for_a_closed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert event_outbox.prefect_reachable(timeout=2) is False
