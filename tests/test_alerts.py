"""Specification of alerts: payloads, signatures, retries, the durable outbox, secrets that stay secret."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prefix_registry.alerts import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Alert,
    AlertDispatcher,
    alert_alias_change,
    alerting_registry,
    is_slack_sink,
    redact_url,
    sign,
    verify_signature,
)
from prefix_registry.alerts import dispatcher as dispatcher_module
from prefix_registry.flows.loopback import free_port
from prefix_registry.monitoring.drift import DriftVerdict, SignalResult
from prefix_registry.monitoring.drift_alert import drift_alert
from prefix_registry.registry.aliases import new_event
from prefix_registry.registry.store import AliasChange
from prefix_registry.settings import Settings
from tests.servers.webhook_receiver import WebhookReceiver

SECRET = "hmac-secret-do-not-leak-7f3a"
SLACK_TOKEN_PATH = "/services/T0001/B0002/tokenXYZsecret"

MakeDispatcher = Callable[..., AlertDispatcher]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET) as running:
        yield running


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
def make_dispatcher(outbox: Path) -> Iterator[MakeDispatcher]:
    """Dispatchers with tiny backoff, so retries cost milliseconds; background work joined at teardown."""
    made: list[AlertDispatcher] = []

    def make(sinks: list[str], **options: object) -> AlertDispatcher:
        settings: dict = {"secret": SECRET, "outbox_path": outbox, "timeout": 2.0, "max_attempts": 3, "backoff": 0.01}
        settings.update(options)
        dispatcher = AlertDispatcher(sinks, **settings)  # type: ignore[arg-type]
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.wait(10)


def _alert(**changes: object) -> Alert:
    values: dict = {
        "kind": "promotion",
        "task": "sentiment",
        "title": "sentiment: champion promoted to version 3 (was version 2)",
        "details": {"from": "2", "to": "3", "actor": "ann", "reason": "better F1"},
        "severity": "info",
    }
    values.update(changes)
    return Alert(**values)


def _wait_until_due(dispatcher: AlertDispatcher) -> None:
    latest = max(row["next_attempt_at"] for row in dispatcher.pending())
    time.sleep(max(0.0, latest - time.time()) + 0.05)


def _alias_change(action: str, from_version: str | None, to_version: str) -> AliasChange:
    event = new_event([], "champion", action, from_version, to_version, "ann", "canary regressed")
    return AliasChange("sentiment", "champion", from_version, to_version, event)


# -- alerts and payloads -------------------------------------------------------------------------------------
def test_alert_has_uuid_id_utc_time_and_rejects_unknown_severity() -> None:
    alert = _alert()
    assert len(alert.alert_id) == 32 and int(alert.alert_id, 16) >= 0
    assert alert.created_at.endswith("+00:00")
    assert _alert().alert_id != alert.alert_id
    with pytest.raises(ValueError, match="severity must be one of info, warning, critical, got 'loud'"):
        _alert(severity="loud")


def test_generic_sink_receives_the_alert_as_json(receiver: WebhookReceiver, make_dispatcher: MakeDispatcher) -> None:
    alert = _alert()
    report = make_dispatcher([receiver.url + "/hooks/alerts"]).dispatch(alert)

    assert report.all_delivered and report.deliveries[0].attempts == 1
    (request,) = receiver.requests
    assert request.path == "/hooks/alerts"
    assert request.header("Content-Type") == "application/json"
    assert request.header("X-Prefix-Registry-Alert-Id") == alert.alert_id
    assert request.json() == {
        "source": "prefix-registry",
        "kind": "promotion",
        "task": "sentiment",
        "title": alert.title,
        "details": {"from": "2", "to": "3", "actor": "ann", "reason": "better F1"},
        "severity": "info",
        "alert_id": alert.alert_id,
        "created_at": alert.created_at,
    }


def test_slack_prefixed_sink_gets_blocks_and_the_prefix_is_stripped(
    receiver: WebhookReceiver, make_dispatcher: MakeDispatcher
) -> None:
    alert = _alert(title="sentiment: <champion> & co", severity="warning")
    report = make_dispatcher(["slack+" + receiver.url + SLACK_TOKEN_PATH]).dispatch(alert)

    assert report.all_delivered
    (request,) = receiver.requests
    assert request.path == SLACK_TOKEN_PATH
    payload = request.json()
    assert set(payload) == {"text", "blocks"}
    assert payload["text"] == "[WARNING] sentiment: <champion> & co"
    title_block, fields_block, context_block = payload["blocks"]
    escaped_title = ":warning: *sentiment: &lt;champion&gt; &amp; co*"
    assert title_block["text"] == {"type": "mrkdwn", "text": escaped_title}
    assert {"type": "mrkdwn", "text": "*to*\n3"} in fields_block["fields"]
    assert {"type": "mrkdwn", "text": "*reason*\nbetter F1"} in fields_block["fields"]
    assert context_block["type"] == "context" and alert.alert_id in context_block["elements"][0]["text"]


def test_slack_is_chosen_by_prefix_or_by_host() -> None:
    assert is_slack_sink("slack+https://chat.example.com/hook")
    assert is_slack_sink("https://hooks.slack.com/services/T/B/X")
    assert not is_slack_sink("https://example.com/hooks.slack.com")
    assert redact_url("slack+https://hooks.slack.com/services/T/B/X") == "slack+https://hooks.slack.com/…"
    assert redact_url("https://user:pw@example.com:8443/x?token=1") == "https://example.com:8443/…"


# -- signatures ----------------------------------------------------------------------------------------------
def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign(SECRET, "1700000000", b"{}") == f"sha256={expected}"


def test_signature_verifies_with_the_right_secret_only(
    receiver: WebhookReceiver, make_dispatcher: MakeDispatcher
) -> None:
    make_dispatcher([receiver.url]).dispatch(_alert())

    (request,) = receiver.requests
    timestamp, header = request.header(TIMESTAMP_HEADER), request.header(SIGNATURE_HEADER)
    assert timestamp is not None and header is not None and header.startswith("sha256=")
    assert abs(int(timestamp) - time.time()) < 60
    assert request.signature_valid is True
    assert verify_signature(SECRET, timestamp, request.body, header)
    assert not verify_signature("wrong-secret", timestamp, request.body, header)
    assert not verify_signature(SECRET, timestamp, request.body.replace(b"sentiment", b"sentimenT"), header)
    assert not verify_signature(SECRET, timestamp, request.body, header, now=int(timestamp) + 301)
    assert not verify_signature(SECRET, "not-a-number", request.body, header)
    assert not verify_signature(SECRET, timestamp, request.body, None)


def test_stale_but_correctly_signed_request_is_rejected() -> None:
    stale = str(int(time.time()) - 600)
    assert not verify_signature(SECRET, stale, b"{}", sign(SECRET, stale, b"{}"))
    assert verify_signature(SECRET, stale, b"{}", sign(SECRET, stale, b"{}"), tolerance_seconds=900)


def test_requests_are_unsigned_without_a_secret(receiver: WebhookReceiver, make_dispatcher: MakeDispatcher) -> None:
    make_dispatcher([receiver.url], secret=None).dispatch(_alert())

    (request,) = receiver.requests
    assert request.header(TIMESTAMP_HEADER) is None and request.header(SIGNATURE_HEADER) is None
    assert request.signature_valid is False


# -- delivery, retries and the outbox ------------------------------------------------------------------------
def test_retries_until_the_receiver_recovers(receiver: WebhookReceiver, make_dispatcher: MakeDispatcher) -> None:
    receiver.fail_next(2)
    dispatcher = make_dispatcher([receiver.url], max_attempts=4)

    report = dispatcher.dispatch(_alert())

    (delivery,) = report.deliveries
    assert delivery.delivered and delivery.attempts == 3 and delivery.error is None
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert dispatcher.pending() == []


def test_receiver_down_keeps_the_row_until_it_comes_back(make_dispatcher: MakeDispatcher) -> None:
    port = free_port()
    dispatcher = make_dispatcher([f"http://127.0.0.1:{port}/hook/tok3n"], max_attempts=2)
    alert = _alert()

    report = dispatcher.dispatch(alert)

    (delivery,) = report.deliveries
    assert not delivery.delivered and delivery.attempts == 2
    assert delivery.error is not None and delivery.error.startswith("ConnectError")
    (row,) = dispatcher.pending()
    assert row["alert_id"] == alert.alert_id and row["attempts"] == 2
    assert row["last_error"].startswith("ConnectError")
    assert row["sink"] == f"http://127.0.0.1:{port}/…"

    _wait_until_due(dispatcher)
    with WebhookReceiver(secret=SECRET, port=port) as back:
        redelivery = dispatcher.redeliver_outbox()
        assert [d.delivered for d in redelivery.deliveries] == [True]
        assert redelivery.deliveries[0].attempts == 3
        (request,) = back.requests
        assert request.path == "/hook/tok3n" and request.json()["alert_id"] == alert.alert_id
        assert request.signature_valid is True
    assert dispatcher.pending() == []


def test_next_dispatch_first_sends_older_alerts_oldest_first(make_dispatcher: MakeDispatcher) -> None:
    port = free_port()
    dispatcher = make_dispatcher([f"http://127.0.0.1:{port}"], max_attempts=1)
    first, second = _alert(title="first"), _alert(title="second")
    dispatcher.dispatch(first)
    dispatcher.dispatch(second)
    assert [row["alert_id"] for row in dispatcher.pending()] == [first.alert_id, second.alert_id]

    _wait_until_due(dispatcher)
    with WebhookReceiver(port=port) as back:
        report = dispatcher.dispatch(third := _alert(title="third"))
        titles = [request.json()["title"] for request in back.requests]
    assert titles == ["first", "second", "third"]
    assert [d.alert_id for d in report.redelivered] == [first.alert_id, second.alert_id]
    assert report.all_delivered and report.deliveries[0].alert_id == third.alert_id
    assert dispatcher.pending() == []


def test_redelivery_tries_a_dead_sink_once_per_pass(make_dispatcher: MakeDispatcher) -> None:
    dispatcher = make_dispatcher([f"http://127.0.0.1:{free_port()}"], max_attempts=1)
    for title in ("a", "b", "c"):
        dispatcher.dispatch(_alert(title=title))
    _wait_until_due(dispatcher)
    before = [row["attempts"] for row in dispatcher.pending()]

    report = dispatcher.redeliver_outbox()

    assert len(report.deliveries) == 1 and not report.deliveries[0].delivered
    after = [row["attempts"] for row in dispatcher.pending()]
    assert after == [before[0] + 1, *before[1:]]  # only the oldest row was tried


def test_slow_receiver_does_not_hold_the_caller(receiver: WebhookReceiver, make_dispatcher: MakeDispatcher) -> None:
    receiver.delay = 5.0
    dispatcher = make_dispatcher([receiver.url], timeout=0.3, max_attempts=2)

    started = time.monotonic()
    report = dispatcher.dispatch(_alert())
    elapsed = time.monotonic() - started

    assert elapsed < 4.0  # two 0.3 s timeouts, far below one 5 s answer
    (delivery,) = report.deliveries
    assert not delivery.delivered and delivery.attempts == 2
    assert delivery.error is not None and "Timeout" in delivery.error
    assert len(receiver.requests) == 2
    assert dispatcher.pending()[0]["attempts"] == 2


def test_background_dispatch_returns_at_once_with_the_row_already_durable(
    receiver: WebhookReceiver, make_dispatcher: MakeDispatcher, outbox: Path
) -> None:
    receiver.delay = 1.0
    dispatcher = make_dispatcher([receiver.url])
    alert = _alert()

    started = time.monotonic()
    dispatcher.dispatch_in_background(alert)
    elapsed = time.monotonic() - started

    assert elapsed < 0.8
    with sqlite3.connect(outbox) as conn:  # visible to any other process right away
        assert conn.execute("SELECT alert_id FROM outbox").fetchall() == [(alert.alert_id,)]
    assert dispatcher.wait(10) is True
    assert dispatcher.pending() == []
    assert [r.json()["alert_id"] for r in receiver.requests] == [alert.alert_id]
    assert dispatcher.background_reports[0].all_delivered


def test_secret_and_webhook_token_never_leak(
    receiver: WebhookReceiver,
    make_dispatcher: MakeDispatcher,
    outbox: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="prefix_registry.alerts")
    receiver.fail_next(10)
    dead = f"slack+http://127.0.0.1:{free_port()}{SLACK_TOKEN_PATH}"
    dispatcher = make_dispatcher([dead, receiver.url + SLACK_TOKEN_PATH], max_attempts=2)

    report = dispatcher.dispatch(_alert())

    assert report.failed and len(dispatcher.pending()) == 2
    assert "not delivered" in caplog.text
    leaks = {
        "logs": caplog.text,
        "report": repr(report),
        "pending": repr(dispatcher.pending()),
        "dispatcher repr": repr(dispatcher),
    }
    for where, text in leaks.items():
        assert SECRET not in text, where
        assert "tokenXYZsecret" not in text, where
    assert SECRET not in repr(vars(dispatcher))
    assert SECRET.encode() not in outbox.read_bytes()


# -- convenience functions -----------------------------------------------------------------------------------
def test_alias_change_without_webhooks_sends_nothing(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", alert_webhooks=[], alert_secret=None)

    assert alert_alias_change(_alias_change("promote", "1", "2"), "promotion", settings) is None
    assert not (tmp_path / "home" / "alerts_outbox.db").exists()


def test_alias_change_alerts_carry_the_change(receiver: WebhookReceiver, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", alert_webhooks=[receiver.url], alert_secret=SECRET)

    promoted = alert_alias_change(_alias_change("promote", "1", "2"), "promotion", settings)
    rolled_back = alert_alias_change(_alias_change("rollback", "2", "1"), "rollback", settings)

    assert promoted is not None and promoted.all_delivered
    assert rolled_back is not None and rolled_back.all_delivered
    first, second = (request.json() for request in receiver.requests)
    assert (first["kind"], first["severity"]) == ("promotion", "info")
    assert first["title"] == "sentiment: champion promoted to version 2 (was version 1)"
    moved = {key: first["details"][key] for key in ("from", "to", "actor")}
    assert moved == {"from": "1", "to": "2", "actor": "ann"}
    assert (second["kind"], second["severity"]) == ("rollback", "warning")
    assert second["title"] == "sentiment: champion rolled back from version 2 to version 1"
    assert all(request.signature_valid for request in receiver.requests)


def test_alias_change_with_receiver_down_waits_in_the_outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatcher_module, "AlertDispatcher", functools.partial(AlertDispatcher, backoff=0.01))
    home = tmp_path / "home"
    settings = Settings(home=home, alert_webhooks=[f"http://127.0.0.1:{free_port()}"], alert_secret=SECRET)

    report = alert_alias_change(_alias_change("rollback", "2", "1"), "rollback", settings)

    assert report is not None and not report.all_delivered and report.deliveries[0].attempts == 4
    with sqlite3.connect(home / "alerts_outbox.db") as conn:
        assert conn.execute("SELECT kind, attempts FROM outbox").fetchall() == [("rollback", 4)]


def _verdict(**signals: tuple[float, bool, bool]) -> DriftVerdict:
    """A drift verdict whose signals are given as name=(score, drifted, alarm_enabled)."""
    results = {
        name: SignalResult(name, "input", "wasserstein", "distance", score, 0.3, drifted, alarm_enabled)
        for name, (score, drifted, alarm_enabled) in signals.items()
    }
    status = "drift" if any(r.alarm for r in results.values()) else "ok"
    return DriftVerdict("sentiment", "3", status, {"size": 2000}, {"size": 500}, signals=results)


def test_drift_alert_names_the_signals_that_raised_the_alarm() -> None:
    verdict = _verdict(embedding=(0.41, True, True), confidence=(0.05, False, True), oov_rate=(0.5, True, False))

    alert = drift_alert(verdict, "run-7")

    assert (alert.kind, alert.severity, alert.task) == ("drift_detected", "warning", "sentiment")
    assert alert.title == "sentiment v3: 1 of 3 signal(s) drifted: embedding"
    assert alert.details["drifted_signals"] == ["embedding"]
    assert alert.details["signals"]["embedding"] == {
        "score": 0.41,
        "threshold": 0.3,
        "drifted": True,
        "alarm": True,
        "method": "wasserstein",
    }
    # Past its threshold but not allowed to alarm: reported, not listed as a reason.
    assert alert.details["signals"]["oov_rate"]["drifted"] is True
    assert alert.details["signals"]["oov_rate"]["alarm"] is False
    assert (alert.details["current_size"], alert.details["reference_size"]) == (500, 2000)
    assert alert.details["monitoring_run_id"] == "run-7"


def test_a_verdict_without_alarms_lists_no_drifted_signal() -> None:
    verdict = _verdict(oov_rate=(0.5, True, False), confidence=(0.05, False, True))

    alert = drift_alert(verdict)

    assert alert.title == "sentiment v3: no signal over its threshold"
    assert alert.details["drifted_signals"] == [] and alert.details["drift_detected"] is False
    assert verdict.to_dict()["signals"]["confidence"]["alarm"] is False


def test_alias_moves_of_an_alerting_registry_alert_once_and_challenger_moves_quietly(
    receiver: WebhookReceiver, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFIX_REGISTRY_ALERT_WEBHOOKS", receiver.url)
    monkeypatch.setenv("PREFIX_REGISTRY_ALERT_SECRET", SECRET)
    registry = alerting_registry()
    moves: list[AliasChange] = []
    registry.alias_observers.append(moves.append)
    change = _alias_change("promote", "1", "2")
    unchanged = AliasChange("sentiment", "champion", "2", "2", change.event)
    challenger = AliasChange("sentiment", "challenger", None, "3", change.event)

    for move in (change, unchanged, challenger):
        registry.alias_mover.announce(move)

    assert receiver.wait_for(1)
    time.sleep(0.2)
    assert [request.json()["kind"] for request in receiver.requests] == ["promotion"]
    assert moves == [change, challenger]  # promoting the current version moved nothing
