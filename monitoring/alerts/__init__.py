"""Alerts: drift, promotions, rollbacks and retrain decisions, posted to webhooks through a durable outbox.

model.py        Alert: one event about one task
builders.py     the alerts prefix-registry sends (drift, alias move, retrain decision)
alias_moves.py  the alias observer: every promotion and rollback alerts, in one place
sinks.py        which body a webhook URL receives; URLs shown redacted
slack.py        Slack messages (text + blocks)
signing.py      HMAC signatures, and their check for receivers
outbox.py       the SQLite outbox: one row per (alert, sink) until delivered
dispatcher.py   delivery with retries and backoff; `send_alert` for the configured webhooks
"""

from prefix_registry.monitoring.alerts.alias_moves import AliasAlerts, alerting_registry
from prefix_registry.monitoring.alerts.builders import (
    alert_alias_change,
    alias_change_alert,
    drift_alert,
    retrain_decision_alert,
)
from prefix_registry.monitoring.alerts.dispatcher import (
    ALERT_ID_HEADER,
    AlertDispatcher,
    DispatchReport,
    SinkDelivery,
    dispatcher_from_settings,
    send_alert,
)
from prefix_registry.monitoring.alerts.model import SEVERITIES, Alert
from prefix_registry.monitoring.alerts.outbox import OUTBOX_FILE, AlertOutbox
from prefix_registry.monitoring.alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify_signature
from prefix_registry.monitoring.alerts.sinks import delivery_url, is_slack_sink, payload_for_sink, redact_url
from prefix_registry.monitoring.alerts.slack import slack_payload

__all__ = [
    "ALERT_ID_HEADER",
    "OUTBOX_FILE",
    "SEVERITIES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Alert",
    "AlertDispatcher",
    "AlertOutbox",
    "AliasAlerts",
    "DispatchReport",
    "SinkDelivery",
    "alert_alias_change",
    "alerting_registry",
    "alias_change_alert",
    "delivery_url",
    "dispatcher_from_settings",
    "drift_alert",
    "is_slack_sink",
    "payload_for_sink",
    "redact_url",
    "retrain_decision_alert",
    "send_alert",
    "sign",
    "slack_payload",
    "verify_signature",
]
