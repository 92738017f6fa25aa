"""Slack incoming-webhook messages: the alert's title, its details as fields, and a context line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefix_registry.alerts.model import Alert

_SEVERITY_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
_SLACK_FIELDS_PER_SECTION = 10  # Slack's limit for `fields` in one section block
_SLACK_FIELD_CHARS = 1900  # below Slack's 2000-character limit per field


def _format_scalar(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _format_value(value: Any) -> str:
    """A detail value as short mrkdwn-free text: dicts become `key=value` lines, lists comma-joined."""
    if isinstance(value, Mapping):
        lines = []
        for key, inner in value.items():
            if isinstance(inner, Mapping):
                inner_text = ", ".join(f"{k}={_format_scalar(v)}" for k, v in inner.items())
            else:
                inner_text = _format_value(inner)
            lines.append(f"{key}: {inner_text}")
        return "\n".join(lines) or "—"
    if isinstance(value, list | tuple | set):
        return ", ".join(_format_value(item) for item in value) or "—"
    return _format_scalar(value)


def _escape_mrkdwn(text: str) -> str:
    # Slack's three control characters; everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail_fields(details: Mapping[str, Any]) -> list[dict[str, str]]:
    fields = []
    for key, value in details.items():
        text = f"*{_escape_mrkdwn(str(key))}*\n{_escape_mrkdwn(_format_value(value))}"
        fields.append({"type": "mrkdwn", "text": clip(text, _SLACK_FIELD_CHARS)})
    return fields


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (notification fallback) and `blocks` in mrkdwn.

    Blocks: the title with a severity emoji, the details as fields (10 per section), and a context line with
    kind, task, severity, time and alert id.
    """
    emoji = _SEVERITY_EMOJI[alert.severity]
    title = _escape_mrkdwn(alert.title)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(f"{emoji} *{title}*", 2900)}}
    ]
    fields = _detail_fields(alert.details)
    for start in range(0, len(fields), _SLACK_FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": fields[start : start + _SLACK_FIELDS_PER_SECTION]})
    context = (
        f"*{_escape_mrkdwn(alert.kind)}* · task `{_escape_mrkdwn(alert.task)}` · {alert.severity} · "
        f"{alert.created_at} · id `{alert.alert_id}`"
    )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": f"[{alert.severity.upper()}] {alert.title}", "blocks": blocks}
