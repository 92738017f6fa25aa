"""What `prefixctl flows serve` registers: the monitoring and rollout-judging schedule (the retrain's settings are
`RetrainPolicy`).

Pydantic only, so the CLI reads each option's default and help text here without importing Prefect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefix_registry.config_values import field_default, field_help, from_values
from prefix_registry.monitoring.drift_config import DEFAULT_CURRENT_WINDOW


class MonitorSchedule(BaseModel):
    """How often and over which traffic the `monitor-prefix` deployment checks for drift."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    monitor_every_minutes: float = Field(default=10.0, gt=0, description="Minutes between monitoring runs.")
    tasks: list[str] | None = Field(default=None, description="Monitor only these tasks (default: every served task).")
    current_last: int = Field(
        default=DEFAULT_CURRENT_WINDOW, ge=1, description="Predictions in each monitoring window."
    )
    judge_every_minutes: float = Field(
        default=5.0, gt=0, description="Minutes between two judgements of the running rollouts (judge-rollout)."
    )

    @classmethod
    def from_values(cls, values: Mapping[str, Any] | None) -> MonitorSchedule:
        """A schedule from a mapping; ConfigError in one line on a bad key or value (None keeps a default)."""
        return from_values(cls, values, "monitoring schedule")


def schedule_default(name: str) -> Any:
    """The default of one schedule field, for the command-line option that sets it."""
    return field_default(MonitorSchedule, name)


def schedule_help(name: str) -> str:
    """The description of one schedule field: the help text of the command-line option that sets it."""
    return field_help(MonitorSchedule, name)
