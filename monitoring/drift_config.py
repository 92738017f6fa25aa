"""Drift thresholds: one entry per signal, with defaults that keep clean traffic quiet.

Every method is pinned (Evidently otherwise switches from p-values to distances at 1,000 rows). Distances are used
rather than p-values: with many signals checked on every window, p < 0.05 tests would raise false alarms routinely,
while a distance says how large a shift is, whatever the window size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prefix_registry.errors import ConfigError

if TYPE_CHECKING:
    from prefix_registry.kinds import TaskKind

# The kinds (which load torch) are imported where a config is built, not here: the CLI reads DEFAULT_CURRENT_WINDOW
# for `prefixctl --help`.

# Predictions in a monitoring pass's current window unless told otherwise (CLI, flow, deployment).
DEFAULT_CURRENT_WINDOW = 500


class SignalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field(description="Evidently drift method (distance) or 'domain_classifier' for embeddings.")
    threshold: float = Field(description="The signal drifts when its score is above this value.")
    alarm: bool = Field(default=True, description="Whether this signal alone makes the verdict 'drift detected'.")


def _default_signals() -> dict[str, SignalConfig]:
    from prefix_registry.kinds import CLASSIFICATION

    return {
        # Input drift: what people send.
        "text_length": SignalConfig(method="wasserstein", threshold=0.3),
        "oov_rate": SignalConfig(method="wasserstein", threshold=0.3),
        "embedding": SignalConfig(method="domain_classifier", threshold=0.7),
        # Prediction drift: what the model answers (a classification task's signals; another kind's signals take
        # their kind's defaults unless configured).
        **_output_signals(CLASSIFICATION),
    }


def _output_signals(kind: TaskKind) -> dict[str, SignalConfig]:
    return {s.column: SignalConfig(method=s.method, threshold=s.threshold) for s in kind.output_signals}


def known_signals() -> list[str]:
    """Every signal a drift config may name: the input signals and the output signals of every registered kind."""
    from prefix_registry.kinds import kind_named, kind_names

    names = set(_default_signals())
    for name in kind_names():
        names |= set(kind_named(name).signal_columns)
    return sorted(names)


class DriftConfig(BaseModel):
    """Windows, sampling and per-signal thresholds of a drift check."""

    model_config = ConfigDict(extra="forbid")

    min_window: int = Field(default=100, ge=10, description="Fewer rows than this in a window: insufficient data.")
    max_embedding_samples: int = Field(
        default=1000, ge=50, description="Rows per window embedded for the embedding signal (bounds time and memory)."
    )
    min_labelled: int = Field(default=100, ge=10, description="Feedback labels needed to judge live accuracy.")
    accuracy_drop: float = Field(
        default=0.10, gt=0, lt=1, description="Alarm when live accuracy is this far below the reference accuracy."
    )
    seed: int = Field(default=0, description="Seed for sampling and the domain classifier split.")
    signals: dict[str, SignalConfig] = Field(default_factory=_default_signals)

    @classmethod
    def load(cls, path: Path | None) -> DriftConfig:
        """Defaults, overridden by a YAML file's values (signals are merged one by one)."""
        if path is None:
            return cls()
        if not path.exists():
            raise ConfigError(f"drift config not found: {path}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"drift config {path} is not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"drift config {path} must be a mapping, got {type(values).__name__}")
        signals = {**{k: v.model_dump() for k, v in _default_signals().items()}, **(values.pop("signals", None) or {})}
        unknown = sorted(set(signals) - set(known_signals()))
        if unknown:
            raise ConfigError(f"drift config {path}: unknown signal(s) {unknown}; known: {known_signals()}")
        try:
            return cls(**values, signals=signals)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"drift config {path}: {where}: {first['msg']}") from None
