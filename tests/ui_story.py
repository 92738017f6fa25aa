"""The story the MLflow UI must tell, built through the product's own code paths with tiny training settings:

v1  trained on RT, promoted to champion
v2  retrained from v1 on fresh IMDB feedback, judged against v1 on the same sets, promoted
    then rolled back (champion -> v1) with a reason
"""

from __future__ import annotations

from dataclasses import dataclass

from prefix_registry.monitoring.alerts import alerting_registry
from prefix_registry.monitoring.prediction_log import PredictionLog
from prefix_registry.monitoring.retraining import RetrainDecision, RetrainPolicy, retrain
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from tests.conftest import log_labelled_traffic, tiny_config, tiny_data

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
