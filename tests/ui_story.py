"""The story the MLflow UI must tell, built through the product's own code paths with tiny training settings:

v1  trained on RT, promoted to champion
v2  retrained from v1 on fresh IMDB feedback, judged against v1 on the same sets, promoted
    then rolled back (champion -> v1) with a reason
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from prefix_registry.monitoring.alerts import alerting_registry
from prefix_registry.monitoring.prediction_log import PredictionLog, PredictionRecord
from prefix_registry.monitoring.retraining import RetrainDecision, RetrainPolicy, retrain
from prefix_registry.registry.loading import load_version
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from tests.conftest import tiny_config, tiny_data

TASK = "sentiment"
ROLLBACK_REASON = "v2 misreads sarcastic reviews in production"
# Promotes whatever the tiny challenger scores: the story needs a promotion to roll back.
STORY_POLICY = RetrainPolicy(
    min_fresh_labels=60, cooldown_minutes=0, epochs=1, margin=-1.0, max_reference_regression=1.0
)


@dataclass(frozen=True)
class Story:
    registry: PrefixRegistry
    decision: RetrainDecision


def log_labelled_traffic(registry: PrefixRegistry, task: str, frame: pd.DataFrame) -> None:
    """The champion's predictions on `frame`, logged as served traffic, with the true labels as feedback."""
    version = registry.resolve(task)
    predictions = load_version(registry, version).predict(frame["text"].tolist())
    with PredictionLog.from_settings(registry.settings) as log:
        records = [
            PredictionRecord.new(task, version.version, text, label, dict(zip(predictions.labels, p, strict=True)))
            for text, label, p in zip(
                frame["text"], predictions.predicted, predictions.probabilities.tolist(), strict=True
            )
        ]
        log.write(records)
        for record, truth in zip(records, frame["label"], strict=True):
            log.attach_feedback(record.prediction_id, truth)


def build_story() -> Story:
    """v1 champion, v2 retrained and promoted, then rolled back; in the current project home."""
    registry = alerting_registry()
    train_and_register(registry, TASK, tiny_data(limit=240), tiny_config(), promote=True, progress=False)
    log_labelled_traffic(registry, TASK, tiny_data(limit=120, source="imdb").frame)
    with PredictionLog.from_settings(registry.settings) as log:
        decision = retrain(registry, log, TASK, STORY_POLICY, trigger="manual")
    assert decision.promoted, decision.reason
    registry.rollback(TASK, reason=ROLLBACK_REASON)
    return Story(registry, decision)
