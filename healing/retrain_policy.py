"""When and how a challenger is trained, and what it must do to replace the champion.

A small module of its own (pydantic only) so that the CLI can read each field's default and help text when it
builds its options, without importing pandas, torch or MLflow for `prefixctl --help`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefix_registry.config_values import field_default, field_help, from_values


class PromotionMode(StrEnum):
    """How a winning challenger replaces the champion."""

    DIRECT = "direct"  # the champion alias moves to the challenger at once
    SHADOW = "shadow"  # a shadow rollout starts: the judge-rollout flow promotes it on live labels, or rolls it back
    CANARY = "canary"  # a canary rollout of `rollout_share` percent starts, judged the same way


class RetrainPolicy(BaseModel):
    """The retrain's settings. Unknown keys and out-of-range values are refused (see `from_values`).

    Example::

        RetrainPolicy.from_values({"margin": 0.02, "cooldown_minutes": 0})
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    margin: float = Field(default=0.01, description="Macro-F1 the challenger must gain on fresh held-out data.")
    max_reference_regression: float = Field(
        default=0.05, ge=0, description="Macro-F1 the challenger may lose on the champion's own test split."
    )
    holdout_fraction: float = Field(
        default=0.3, gt=0, lt=1, description="Share of fresh labels kept for the judgement."
    )
    min_fresh_labels: int = Field(default=100, ge=1, description="Fewer fresh labels than this: no retrain.")
    max_fresh_labels: int = Field(default=5000, ge=1, description="Use at most this many (the newest) fresh labels.")
    # Measured on RT -> IMDB with 1,500 fresh labels (docs/experiments.md): half as much replay as fresh data and twice
    # the champion's learning rate gave +9 macro-F1 points on fresh held-out data (replay 1.0, same rate: +7 after 5
    # epochs) without forgetting the old domain, in the least time.
    replay_ratio: float = Field(
        default=0.5, ge=0, description="Rows of the champion's training data replayed per fresh training row."
    )
    cooldown_minutes: float = Field(default=60.0, ge=0, description="Minimum minutes between two retrains of a task.")
    epochs: int | None = Field(default=None, ge=1, description="Challenger epochs (default: the champion's).")
    learning_rate: float | None = Field(
        default=None, gt=0, description="Challenger learning rate (default: the method's default times the scale)."
    )
    learning_rate_scale: float = Field(default=2.0, gt=0, description="Challenger rate / the method's default.")
    max_length: int | None = Field(default=None, ge=8, description="Challenger max tokens (default: the champion's).")
    seed: int = Field(default=42, description="Seed for the fresh-data split and the replay sample.")
    promotion: PromotionMode = Field(
        default=PromotionMode.DIRECT,
        description="How a winning challenger replaces the champion: direct (at once), or a shadow or canary rollout "
        "judged on live labels (prefixctl rollout judge, the judge-rollout flow).",
    )
    rollout_share: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="Percent of requests a rollout's challenger answers (canary) or scores (shadow: 100 scores all).",
    )
    refit_head: bool | None = Field(
        default=None,
        description="Refit the challenger's head as a linear probe after training (default: the champion's setting).",
    )

    @classmethod
    def from_values(cls, values: Mapping[str, Any] | None) -> RetrainPolicy:
        """A policy from a mapping (a flow parameter, CLI options); ConfigError in one line on a bad key or value.

        Keys set to None are left at their defaults, so a caller can pass every option it has.
        """
        return from_values(cls, values, "retrain policy")

    def overrides(self) -> dict[str, Any]:
        """Only the fields set explicitly: what a deployment stores as its `policy` parameter."""
        return self.model_dump(exclude_unset=True)


def policy_default(name: str) -> Any:
    """The default of one policy field, for the command-line option that sets it."""
    return field_default(RetrainPolicy, name)


def policy_help(name: str) -> str:
    """The description of one policy field: the help text of the command-line option that sets it."""
    return field_help(RetrainPolicy, name)
