"""A served prediction as a value (`PredictionRecord`), the errors of the prediction log, and the DataFrame shape
that windows of predictions take (`records_frame`). No database and no threads here: see prediction_store.py and
batch_writer.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np
import pandas as pd

from prefix_registry.errors import PrefixRegistryError
from prefix_registry.kinds import CLASSIFICATION, TaskKind

BASE_COLUMNS = [
    "prediction_id",
    "created_at",
    "task",
    "version",
    "text",
    "predicted_label",
    "confidence",
    "feedback_label",
    "feedback_at",
    "request_id",
    "source",
    "key_name",
    "feedback_key",
    "latency_ms",
]
# The score columns of a window are named by the task's kind; the log's own schema is classification's.
PROBABILITY_PREFIX = CLASSIFICATION.score_column("")


class PredictionLogError(PrefixRegistryError):
    """The prediction log cannot be opened, written or read, or was given an invalid value."""


class FeedbackConflict(PredictionLogError):
    """A prediction that already has a different label was labelled again without asking for a correction."""


class FeedbackForbidden(PredictionLogError):
    """A correction of a label another API key sent, by a key not allowed to replace others' labels."""


class PredictionSource(StrEnum):
    """The `source` of a logged prediction, as the HTTP server writes it (other writers name their own)."""

    HTTP = "http"  # an answer of the version serving the task (the champion)
    CANARY = "canary"  # an answer of a canary challenger (serving/app.py, registry/rollouts.py)
    SHADOW = "shadow"  # a shadow challenger's score of a request: logged, never answered


def as_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise PredictionLogError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got naive {value}")
    return value.astimezone(UTC)


@dataclass
class PredictionRecord:
    """One prediction as served, plus the ground-truth label attached later as feedback.

    `probabilities` maps every label to its probability; `confidence` is the largest of them.
    Times are timezone-aware UTC.
    """

    prediction_id: str
    created_at: datetime
    task: str
    version: str
    text: str
    predicted_label: str
    probabilities: dict[str, float]
    confidence: float
    request_id: str | None
    source: str
    feedback_label: str | None = None
    feedback_at: datetime | None = None
    key_name: str | None = None  # the API key that asked for the prediction (its name, never its secret)
    feedback_key: str | None = None  # the API key that sent the label
    latency_ms: float | None = None  # the request's time in the model (queue and forward), as the server measured it

    @classmethod
    def new(
        cls,
        task: str,
        version: str,
        text: str,
        predicted_label: str,
        probabilities: Mapping[str, float],
        request_id: str | None = None,
        source: str = "http",
        created_at: datetime | None = None,
        key_name: str | None = None,
        latency_ms: float | None = None,
    ) -> PredictionRecord:
        """A record for a prediction made now (or at `created_at`), with a fresh uuid4 hex id.

        Raises PredictionLogError when `probabilities` is empty or `created_at` is naive.
        """
        if not probabilities:
            raise PredictionLogError(f"prediction of task {task!r} has no probabilities; expected label -> p")
        probs = {str(label): float(p) for label, p in probabilities.items()}
        return cls(
            prediction_id=uuid.uuid4().hex,
            created_at=datetime.now(UTC) if created_at is None else as_utc(created_at, "created_at"),
            task=task,
            version=str(version),
            text=text,
            predicted_label=predicted_label,
            probabilities=probs,
            confidence=max(probs.values()),
            request_id=request_id,
            source=source,
            key_name=key_name,
            latency_ms=latency_ms,
        )


def records_frame(records: list[PredictionRecord], kind: TaskKind = CLASSIFICATION) -> pd.DataFrame:
    """BASE_COLUMNS plus a float column per score name seen (NaN where a record lacks it), named by `kind`
    (classification: `prob_<label>`, one per label)."""
    if not records:
        return pd.DataFrame(columns=BASE_COLUMNS)
    frame = pd.DataFrame([{column: getattr(record, column) for column in BASE_COLUMNS} for record in records])
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    frame["feedback_at"] = pd.to_datetime(frame["feedback_at"], utc=True)
    frame["confidence"] = frame["confidence"].astype(float)
    labels = sorted({label for record in records for label in record.probabilities})
    probabilities = pd.DataFrame(
        {kind.score_column(label): [record.probabilities.get(label, np.nan) for record in records] for label in labels},
        dtype=float,
    )
    return pd.concat([frame, probabilities], axis=1)
