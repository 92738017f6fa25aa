"""Sinks: webhook URLs, which body each receives, and how a URL is shown without its token.

`slack+https://...` or any `https://hooks.slack.com/...` URL receives a Slack message (`text` + `blocks`); every
other URL receives `Alert.to_payload()` as JSON. URLs are shown redacted as `scheme://host/…`, because Slack URLs
carry their token in the path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from prefix_registry.alerts.model import Alert
from prefix_registry.alerts.slack import slack_payload

SLACK_PREFIX = "slack+"
SLACK_HOST = "hooks.slack.com"


def is_slack_sink(url: str) -> bool:
    """True when `url` gets a Slack-formatted message: a `slack+` prefix or the `hooks.slack.com` host."""
    if url.startswith(SLACK_PREFIX):
        return True
    try:
        return (urlsplit(url).hostname or "").lower() == SLACK_HOST
    except ValueError:
        return False


def delivery_url(url: str) -> str:
    """The URL actually posted to: the sink with any `slack+` prefix removed."""
    return url.removeprefix(SLACK_PREFIX)


def redact_url(url: str) -> str:
    """`scheme://host[:port]/…`: a URL safe to print (no credentials, path, query or token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if not parts.scheme or not host:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}/…"


def payload_for_sink(alert: Alert, sink: str) -> dict[str, Any]:
    """The JSON body `sink` receives: Slack blocks for Slack sinks, `alert.to_payload()` otherwise."""
    return slack_payload(alert) if is_slack_sink(sink) else alert.to_payload()


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; values JSON cannot hold (dates, numpy scalars) are written as strings."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
