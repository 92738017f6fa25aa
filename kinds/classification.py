"""Sequence classification, the first task kind: the only place that names its columns, metrics and signals.

head outputs (n, n_labels) logits --softmax--> probabilities --argmax--> predicted label, confidence
judged by macro-F1 (higher is better), also reported: accuracy, per-class precision / recall / F1
output drift: predicted_label (label distribution, Jensen-Shannon), confidence (Wasserstein)
baseline: a linear probe on the frozen base's mean-pooled embeddings, fitted on the same split
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score

from prefix_registry.errors import ConfigError
from prefix_registry.kinds.base import (
    TRUE_VALUE,
    Baseline,
    BaselineInputs,
    Direction,
    LoggedPrediction,
    OutputSignal,
    TaskKind,
)
from prefix_registry.kinds.classification_metrics import classification_metrics, flat_metrics
from prefix_registry.kinds.imbalance import loss_weights
from prefix_registry.kinds.probe import fit_probe

CLASSIFICATION_NAME = "classification"
PREDICTED_LABEL = "predicted_label"
CONFIDENCE = "confidence"
# The reference file's column of predicted labels (the prediction log's is PREDICTED_LABEL).
REFERENCE_PREDICTED = "predicted"
PROBABILITY_PREFIX = "prob_"
# The predicted label's column in what a version answers as an MLflow model.
MODEL_LABEL = "label"
MACRO_F1 = "macro_f1"
ACCURACY = "accuracy"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, k) logits, in float32 as the prediction paths return it."""
    tensor = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    return torch.softmax(tensor, dim=-1).numpy()


@dataclass(frozen=True)
class ProbeBaseline(Baseline):
    """The linear probe of a version's own split, and the majority-class rate of its test split."""

    probe_test_macro_f1: float
    probe_test_accuracy: float
    probe_validation_macro_f1: float
    majority_class: str
    majority_rate: float  # share of the test split in the most frequent class: a constant predictor's accuracy
    probe_c: float
    probe_class_weight: str
    seconds: float

    @property
    def test_score(self) -> float:
        return self.probe_test_macro_f1

    def metrics(self, own_test_score: float) -> dict[str, float]:
        return {
            "baseline_probe_test_macro_f1": self.probe_test_macro_f1,
            "baseline_probe_test_accuracy": self.probe_test_accuracy,
            "baseline_probe_validation_macro_f1": self.probe_validation_macro_f1,
            "baseline_majority_rate": self.majority_rate,
            "baseline_probe_seconds": self.seconds,
            "own_test_macro_f1_minus_probe": own_test_score - self.probe_test_macro_f1,
        }

    def metrics_by_split(self, own_test_score: float) -> dict[str, dict[str, float]]:
        return {
            "test": {
                "probe_macro_f1": self.probe_test_macro_f1,
                "probe_accuracy": self.probe_test_accuracy,
                "majority_rate": self.majority_rate,
                "macro_f1_minus_probe": own_test_score - self.probe_test_macro_f1,
            },
            "validation": {"probe_macro_f1": self.probe_validation_macro_f1},
            "": {"probe_seconds": self.seconds},
        }

    def headline(self) -> dict[str, float]:
        return {"baseline_probe_macro_f1": self.probe_test_macro_f1, "baseline_majority_rate": self.majority_rate}

    def describe(self) -> str:
        return (
            f"linear probe macro-F1 {self.probe_test_macro_f1:.3f} on the same split; majority-class rate "
            f"{self.majority_rate:.3f}"
        )

    def summary(self) -> dict[str, Any]:
        return asdict(self)


class ClassificationKind(TaskKind):
    """One label per text out of a fixed set; the head gives one logit per label (in `labels` order)."""

    name = CLASSIFICATION_NAME
    decision_metric = MACRO_F1
    direction = Direction.HIGHER
    decision_metric_label = "macro-F1"
    metric_names = (MACRO_F1, ACCURACY)
    peft_task_type = "SEQ_CLS"
    output_signals = (
        OutputSignal(PREDICTED_LABEL, categorical=True, method="jensenshannon", threshold=0.15),
        OutputSignal(CONFIDENCE, categorical=False, method="wasserstein", threshold=0.3),
    )
    judges_live_accuracy = True
    head_is_linear_probe = True

    def head_width(self, labels: Sequence[str]) -> int:
        return len(labels)

    def encode_targets(self, values: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        index = {label: i for i, label in enumerate(labels)}
        unknown = sorted(set(values) - set(index))
        if unknown:
            raise ConfigError(f"training labels {unknown} are not in the label set {list(labels)}")
        return np.array([index[value] for value in values])

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs, targets, weight=weights)

    def target_weights(self, targets: np.ndarray, labels: Sequence[str], weighting: str) -> torch.Tensor | None:
        return loss_weights(targets, len(labels), weighting)

    def predicted(self, outputs: np.ndarray, labels: Sequence[str]) -> list[str]:
        return [labels[i] for i in np.asarray(outputs).argmax(axis=1)]

    def prediction_columns(self, outputs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
        probabilities = softmax(outputs)
        columns: dict[str, Any] = {
            REFERENCE_PREDICTED: [labels[i] for i in probabilities.argmax(axis=1)],
            CONFIDENCE: probabilities.max(axis=1),
        }
        for i, label in enumerate(labels):
            columns[f"{PROBABILITY_PREFIX}{label}"] = probabilities[:, i]
        return columns

    def model_columns(self, outputs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
        """The predicted label, its confidence and one probability per label, as doubles (JSON's numbers)."""
        columns = self.prediction_columns(outputs, labels)
        label = columns.pop(REFERENCE_PREDICTED)
        return {MODEL_LABEL: label, **{name: np.asarray(v, dtype=np.float64) for name, v in columns.items()}}

    def logged_prediction(self, outputs: np.ndarray, labels: Sequence[str]) -> LoggedPrediction:
        probabilities = softmax(np.asarray(outputs)[None, :])[0]
        scores = {str(label): float(p) for label, p in zip(labels, probabilities, strict=True)}
        return LoggedPrediction(labels[int(probabilities.argmax())], scores)

    def score_column(self, name: str) -> str:
        return f"{PROBABILITY_PREFIX}{name}"

    def reference_outputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({PREDICTED_LABEL: frame[REFERENCE_PREDICTED], CONFIDENCE: frame[CONFIDENCE]})

    def logged_outputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                PREDICTED_LABEL: frame.get(PREDICTED_LABEL, pd.Series(dtype=str)),
                CONFIDENCE: frame.get(CONFIDENCE, pd.Series(dtype=float)),
            }
        )

    def metrics(self, true_values: Sequence[str], predicted: Sequence[Any], labels: Sequence[str]) -> dict[str, Any]:
        return classification_metrics(true_values, predicted, labels)

    def flat_metrics(self, metrics: dict[str, Any], prefix: str, separator: str = "_") -> dict[str, float]:
        return flat_metrics(metrics, prefix, separator)

    def headline(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {ACCURACY: metrics[ACCURACY], MACRO_F1: metrics[MACRO_F1], "n": metrics["n"]}

    def live_quality(self, reference: pd.DataFrame, current: pd.DataFrame, min_labelled: int) -> dict[str, Any] | None:
        """Accuracy and macro-F1 of the current window's labelled rows, and the drop from the reference accuracy.

        Each side needs `min_labelled` labels: a reference window of logged predictions with a handful of labels
        gives no reference accuracy (and so no `accuracy_drop`), rather than a noisy one.
        """
        labelled = current[current[TRUE_VALUE].notna()]
        ref_labelled = reference[reference[TRUE_VALUE].notna()]
        quality: dict[str, Any] = {"labelled": len(labelled), "reference_labelled": len(ref_labelled)}
        if len(ref_labelled) >= min_labelled:
            quality["reference_accuracy"] = float(
                accuracy_score(ref_labelled[TRUE_VALUE].astype(str), ref_labelled[PREDICTED_LABEL].astype(str))
            )
        if len(labelled) < min_labelled:
            quality["message"] = f"{len(labelled)} feedback label(s); {min_labelled} needed to judge accuracy"
            return quality
        truth, predicted = labelled[TRUE_VALUE].astype(str), labelled[PREDICTED_LABEL].astype(str)
        quality[ACCURACY] = float(accuracy_score(truth, predicted))
        quality[MACRO_F1] = float(f1_score(truth, predicted, average="macro", zero_division=0))
        if "reference_accuracy" in quality:
            quality["accuracy_drop"] = quality["reference_accuracy"] - quality[ACCURACY]
        return quality

    def describe_scores(self, metrics: dict[str, Any]) -> str:
        scores = f"macro-F1 {metrics[MACRO_F1]:.3f}, accuracy {metrics[ACCURACY]:.3f}"
        return f"{scores} (n={metrics['n']})" if "n" in metrics else scores

    def fit_baseline(self, inputs: BaselineInputs, started: float) -> ProbeBaseline:
        """The linear probe (C and class weighting chosen on validation macro-F1), scored on the test split."""
        probe = fit_probe(inputs.train_x, inputs.train_y, inputs.validation_x, inputs.validation_y, inputs.labels)
        test = classification_metrics(inputs.test_y, probe.model.predict(inputs.test_x).tolist(), inputs.labels)
        shares = pd.Series(inputs.test_y).value_counts(normalize=True)
        return ProbeBaseline(
            probe_test_macro_f1=test[MACRO_F1],
            probe_test_accuracy=test[ACCURACY],
            probe_validation_macro_f1=probe.validation_macro_f1,
            majority_class=str(shares.idxmax()),
            majority_rate=float(shares.max()),
            probe_c=probe.c,
            probe_class_weight=probe.class_weight or "none",
            seconds=time.perf_counter() - started,
        )


CLASSIFICATION = ClassificationKind()
