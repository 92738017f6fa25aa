"""The sizes of the demo's story."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class DemoRollout(StrEnum):
    """How the demo's story rolls a challenger out."""

    DIRECT = "direct"  # the retrain promotes v2 at once (the story of `make demo`)
    CANARY = "canary"  # then a canary chapter: a bad challenger rolled back by the judge, the good one promoted


class DemoConfig(BaseModel):
    """Sizes of the story. The defaults take about 15 minutes on a quiet 2-core CPU; `quick()` about 8."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(description="Folder for the demo's stores (wiped first).")
    task: str = Field(default="movie-sentiment", description="The task the story trains, serves and retrains.")
    train_rows: int = Field(default=6000, ge=100, description="RT reviews v1 is trained on (the rest is traffic).")
    window: int = Field(default=500, ge=100, description="Predictions per traffic window (and monitoring window).")
    clean_windows: int = Field(default=2, ge=1, description="RT windows before the shift.")
    drift_windows: int = Field(default=3, ge=1, description="IMDB windows served by v1 (their labels train v2).")
    after_windows: int = Field(default=2, ge=1, description="IMDB windows served after retraining.")
    min_fresh_labels: int = Field(default=1200, ge=1, description="Fresh labels a retrain waits for.")
    margin: float = Field(default=0.01, description="Macro-F1 v2 must gain over v1 to be promoted.")
    challenger_epochs: int | None = Field(default=None, description="Challenger epochs (default: v1's).")
    challenger_max_length: int | None = Field(default=None, description="Challenger max tokens (default: v1's).")
    train_max_steps: int | None = Field(default=None, description="Cap v1's optimizer steps (smoke runs).")
    seed: int = Field(default=7, description="Seed for the order of the traffic.")
    rollout: DemoRollout = Field(
        default=DemoRollout.DIRECT,
        description="direct: the story as before; canary: after it, a bad challenger (flipped labels) and the good "
        "v2 each meet live traffic as a 30% canary that the rollout judge rolls back or promotes.",
    )
    canary_windows: int = Field(default=6, ge=1, description="Most traffic windows each canary gets before a verdict.")

    @classmethod
    def quick(cls, home: Path) -> DemoConfig:
        """The smaller story of `prefixctl demo --quick` (and of tests/test_demo.py)."""
        return cls(
            home=home,
            train_rows=2500,
            window=250,
            clean_windows=1,
            # v2 trains on the labels of three IMDB windows: with two (473 rows after the split, 35 for validation) a
            # change of dropout masks alone decided whether v2 beat v1 by the margin on the fresh hold-out.
            drift_windows=3,
            after_windows=1,
            min_fresh_labels=600,
        )
