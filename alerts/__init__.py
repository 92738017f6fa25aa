"""Alerts: drift, promotions, rollbacks and retrain decisions, posted to webhooks through a durable outbox.

This layer delivers; the layers that decide (monitoring, healing) build their own alerts.

model.py        Alert: one event about one task
builders.py     the alias-move alert (drift and retrain alerts live with what decides them)
alias_moves.py  the alias observers: every promotion and rollback alerts, in one place; every move is pushed
server_directory.py  the running servers (registered by `prefixctl serve`) and the push secret
server_push.py  the signed push of each alias move to every running server
sinks.py        which body a webhook URL receives; URLs shown redacted
slack.py        Slack messages (text + blocks)
signing.py      HMAC signatures, and their check for receivers
outbox.py       the SQLite outbox: one row per (alert, sink) until delivered
dispatcher.py   delivery with retries and backoff; `send_alert` for the configured webhooks
"""

from prefix_registry.alerts.alias_moves import AliasAlerts, alerting_registry
from prefix_registry.alerts.builders import (
    alert_alias_change,
    alias_change_alert,
)
from prefix_registry.alerts.dispatcher import (
    ALERT_ID_HEADER,
    AlertDispatcher,
    DispatchReport,
    SinkDelivery,
    dispatcher_from_settings,
    send_alert,
)
from prefix_registry.alerts.model import SEVERITIES, Alert
from prefix_registry.alerts.outbox import OUTBOX_FILE, AlertOutbox
from prefix_registry.alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify_signature
from prefix_registry.alerts.sinks import delivery_url, is_slack_sink, payload_for_sink, redact_url
from prefix_registry.alerts.slack import slack_payload

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
    "is_slack_sink",
    "payload_for_sink",
    "redact_url",
    "send_alert",
    "sign",
    "slack_payload",
    "verify_signature",
]
