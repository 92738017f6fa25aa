"""What the registry says about one version of a task's prefix."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

# Version tags written at registration; they make `prefixctl versions` and the MLflow UI self-explanatory.
TAG_METHOD = "method"
TAG_BASE = "base"
TAG_BASE_FINGERPRINT = "base_fingerprint"
TAG_DATA_FINGERPRINT = "data_fingerprint"
TAG_DATA_ORIGIN = "data_origin"
TAG_ADAPTER_SHA256 = "adapter_sha256"
TAG_TRIGGER = "trigger"
TAG_TRIGGER_REASON = "trigger_reason"
TAG_PARENT = "parent_version"
TAG_LABELS = "labels"
METRIC_TAG_PREFIX = "metric."


@dataclass(frozen=True)
class PrefixVersion:
    """One registered adapter of a task: its lineage, integrity data, headline metrics and aliases."""

    task: str
    version: str
    run_id: str
    source: str
    aliases: list[str]
    method: str
    base: str
    base_fingerprint: str
    adapter_sha256: str
    trigger: str
    parent_version: str | None
    created_at: datetime
    description: str = ""
    labels: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready view, as printed by `prefixctl versions --json`."""
        values = asdict(self)
        values["created_at"] = self.created_at.isoformat(timespec="seconds")
        values.pop("tags")
        return values

    @classmethod
    def from_mlflow(cls, model_version: Any, aliases: list[str]) -> PrefixVersion:
        tags = dict(model_version.tags or {})
        metrics = {}
        for key, value in tags.items():
            if key.startswith(METRIC_TAG_PREFIX):
                try:
                    metrics[key.removeprefix(METRIC_TAG_PREFIX)] = float(value)
                except ValueError:
                    continue
        return cls(
            task=model_version.name,
            version=str(model_version.version),
            run_id=model_version.run_id or "",
            source=model_version.source,
            aliases=sorted(aliases),
            method=tags.get(TAG_METHOD, ""),
            base=tags.get(TAG_BASE, ""),
            base_fingerprint=tags.get(TAG_BASE_FINGERPRINT, ""),
            adapter_sha256=tags.get(TAG_ADAPTER_SHA256, ""),
            trigger=tags.get(TAG_TRIGGER, ""),
            parent_version=tags.get(TAG_PARENT) or None,
            created_at=datetime.fromtimestamp(model_version.creation_timestamp / 1000, tz=UTC),
            description=model_version.description or "",
            labels=_json_list(tags.get(TAG_LABELS)),
            metrics=metrics,
            tags=tags,
        )


def _json_list(value: str | None) -> list[str]:
    try:
        parsed = json.loads(value) if value else []
    except json.JSONDecodeError:
        return []
    return [str(item) for item in parsed] if isinstance(parsed, list) else []
