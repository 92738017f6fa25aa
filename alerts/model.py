"""The alert: one event about one task worth telling a person about."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

SEVERITIES = ("info", "warning", "critical")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Alert:
    """One event worth telling a person about.

    Args:
        kind: what happened: "drift_detected", "promotion", "rollback", "retrain_decision", ...
        task: the task (registered model) it concerns.
        title: one human-readable line.
        details: JSON-serialisable facts (versions, scores, actor, reason).
        severity: "info", "warning" or "critical".
    """

    kind: str
    task: str
    title: str
    details: dict[str, Any] = field(default_factory=dict)
    severity: str = "info"
    alert_id: str = field(default_factory=_new_id)
    created_at: str = field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        if not isinstance(self.details, dict):
            raise TypeError(f"alert details must be a dict, got {type(self.details).__name__}")

    def to_payload(self) -> dict[str, Any]:
        """The generic JSON body: every field of the alert plus `source: "prefix-registry"`."""
        return {"source": "prefix-registry", **asdict(self)}
