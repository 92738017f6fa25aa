"""The Evidently report of one drift check: every signal the verdict used, with the numbers the run logs.

    ValueDrift x4                text_length, oov_rate, confidence, predicted_label (pinned methods, thresholds)
    EmbeddingDomainClassifier    the embedding signal: the domain classifier's ROC AUC against its threshold, and
                                 the embeddings drawn on their first two principal components (a fast plot:
                                 Evidently's own embedding widget runs a t-SNE taking tens of seconds)
    LiveAccuracy, LiveMacroF1    on the feedback-labelled rows; macro-averaged like the run's `live_macro_f1`
                                 (Evidently's classification metrics report the positive class's F1 for two labels)

The metrics here are Evidently metrics of our own (`SingleValueMetric` + its calculation), so they sit in the same
report, HTML and snapshot as Evidently's built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric
from evidently.legacy.renderers.html_widgets import CounterData, counter, plotly_figure
from sklearn.metrics import accuracy_score, f1_score

# Columns added to both windows: the embedded rows' coordinates on the first two principal components.
EMBEDDING_X, EMBEDDING_Y = "embedding_pc1", "embedding_pc2"
TRUE_LABEL, PREDICTED_LABEL = "true_label", "predicted_label"


@dataclass(frozen=True)
class EmbeddingSample:
    """The rows of each window that were embedded (row positions) and their embedding vectors."""

    reference_rows: np.ndarray
    reference: np.ndarray
    current_rows: np.ndarray
    current: np.ndarray


def with_embedding_projection(
    reference: pd.DataFrame, current: pd.DataFrame, sample: EmbeddingSample
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both windows with EMBEDDING_X/Y: a PCA fitted on both samples (NaN on rows that were not embedded)."""
    both = np.vstack([sample.reference, sample.current])
    centred = both - both.mean(axis=0)
    # The two leading right singular vectors are the first two principal axes (no sklearn PCA object needed).
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    points = centred @ axes[:2].T
    reference_points, current_points = points[: len(sample.reference)], points[len(sample.reference) :]

    def placed(frame: pd.DataFrame, rows: np.ndarray, xy: np.ndarray) -> pd.DataFrame:
        result = frame.copy()
        for column, values in ((EMBEDDING_X, xy[:, 0]), (EMBEDDING_Y, xy[:, 1])):
            result[column] = np.nan
            result.loc[result.index[rows], column] = values
        return result

    return placed(reference, sample.reference_rows, reference_points), placed(
        current, sample.current_rows, current_points
    )


class EmbeddingDomainClassifier(SingleValueMetric):
    """The embedding signal as judged: `score` (ROC AUC or distance) past `threshold` means drift."""

    method: str
    score: float
    threshold: float


class EmbeddingDomainClassifierCalculation(SingleValueCalculation[EmbeddingDomainClassifier]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
        metric = self.metric
        result = self.result(metric.score)
        figure = _projection_figure(reference_data.as_dataframe(), current_data.as_dataframe())
        drifted = metric.score > metric.threshold
        result.widget = [
            counter(
                title=self.display_name(),
                counters=[
                    CounterData("score", f"{metric.score:.3f}"),
                    CounterData("threshold", f"{metric.threshold:.3f}"),
                    CounterData("verdict", "DRIFT" if drifted else "no drift"),
                ],
            ),
            plotly_figure(title="Embeddings: first two principal components of both windows", figure=figure),
        ]
        return result

    def display_name(self) -> str:
        what = "domain classifier ROC AUC" if self.metric.method == "domain_classifier" else self.metric.method
        return f"Embedding drift ({what})"


def _projection_figure(reference: pd.DataFrame, current: pd.DataFrame) -> Any:
    import plotly.graph_objects as go

    figure = go.Figure()
    for name, frame in (("reference", reference), ("current", current)):
        points = frame[[EMBEDDING_X, EMBEDDING_Y]].dropna()
        figure.add_trace(
            go.Scattergl(
                x=points[EMBEDDING_X],
                y=points[EMBEDDING_Y],
                mode="markers",
                name=name,
                marker={"size": 5, "opacity": 0.6},
            )
        )
    figure.update_layout(xaxis_title="PC 1", yaxis_title="PC 2")
    return figure


class LiveMacroF1(SingleValueMetric):
    """Macro-averaged F1 of the rows with a true label (the run's `live_macro_f1`), current and reference."""


class LiveMacroF1Calculation(SingleValueCalculation[LiveMacroF1]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> tuple[SingleValue, SingleValue | None]:
        def value(data: Any) -> SingleValue:
            truth, predicted = _labelled(data.as_dataframe())
            return self.result(float(f1_score(truth, predicted, average="macro", zero_division=0)))

        return value(current_data), value(reference_data) if _has_labels(reference_data) else None

    def display_name(self) -> str:
        return "Live macro-F1 (feedback-labelled rows, macro average)"


class LiveAccuracy(SingleValueMetric):
    """Accuracy of the rows with a true label, and its drop from the reference (the `accuracy_drop` signal)."""

    drop_threshold: float


class LiveAccuracyCalculation(SingleValueCalculation[LiveAccuracy]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> tuple[SingleValue, SingleValue | None]:
        current = self.result(float(accuracy_score(*_labelled(current_data.as_dataframe()))))
        if not _has_labels(reference_data):  # a logged reference window nobody labelled: no drop to show
            return current, None
        reference = self.result(float(accuracy_score(*_labelled(reference_data.as_dataframe()))))
        drop = float(reference.value) - float(current.value)
        current.widget = [
            counter(
                title=self.display_name(),
                counters=[
                    CounterData("live accuracy", f"{current.value:.3f}"),
                    CounterData("reference accuracy", f"{reference.value:.3f}"),
                    CounterData("drop", f"{drop:+.3f}"),
                    CounterData("alarm above", f"{self.metric.drop_threshold:.3f}"),
                ],
            )
        ]
        return current, reference

    def display_name(self) -> str:
        return "Live accuracy (feedback-labelled rows)"


def _has_labels(data: Any) -> bool:
    """Whether a window (None: none given) has rows with a true label."""
    return data is not None and bool(data.as_dataframe()[TRUE_LABEL].notna().any())


def _labelled(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    labelled = frame[frame[TRUE_LABEL].notna()]
    return labelled[TRUE_LABEL].astype(str), labelled[PREDICTED_LABEL].astype(str)
