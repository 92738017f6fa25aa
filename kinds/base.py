"""What a kind of task is, as the layers above ask it: the seam where a new kind (generation, regression...) plugs in.

    head outputs (n_texts, head_width) --kind.predicted--> what is compared with the true values
                                       --kind.prediction_columns--> a version's drift reference file
                                       --kind.logged_prediction--> one row of the prediction log
    true values + predicted --kind.metrics--> nested metrics --kind.flat_metrics--> MLflow metrics
    kind.decision_metric + kind.direction: which metric decides (training's best state, baseline gate, retrain)
    kind.output_signals: the output drift signals of a monitored window (columns and their drift methods)

Training, the registry, the prediction log, monitoring and retraining name no metric, column or signal of their own:
they ask the task's kind. A version records its kind (`TrainConfig.kind`, the `kind` version tag); a version without
one is classification.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

# The column of the prediction log (and of a drift window) that holds the label sent later as feedback.
TRUE_VALUE = "true_label"


class Direction(StrEnum):
    """Which way a metric gets better."""

    HIGHER = "higher"
    LOWER = "lower"


@dataclass(frozen=True)
class OutputSignal:
    """One drift signal on what a version answers: a column of the drift window and how it drifts by default.

    `categorical` columns are compared as distributions of values (strings), the others as numbers. `method` and
    `threshold` are the defaults a drift config may override (by the signal's name, which is `column`).
    """

    column: str
    categorical: bool
    method: str
    threshold: float


@dataclass(frozen=True)
class LoggedPrediction:
    """One prediction as the prediction log stores it (its schema is shared by every kind).

    `predicted_label`: the answer as text (the `predicted_label` column); `scores`: named numbers (the JSON
    `probabilities` column, read back as one float column per name, see `TaskKind.score_column`).
    """

    predicted_label: str
    scores: dict[str, float]


@dataclass(frozen=True)
class BaselineInputs:
    """What a baseline is fitted and scored on: frozen-base features of each split and their true values."""

    train_x: np.ndarray
    train_y: list[str]
    validation_x: np.ndarray
    validation_y: list[str]
    test_x: np.ndarray
    test_y: list[str]
    labels: list[str]


class Baseline(ABC):
    """What a version has to beat on its own test split, fitted on the same split."""

    @property
    @abstractmethod
    def test_score(self) -> float:
        """The decision metric of the baseline on the test split."""

    @abstractmethod
    def metrics(self, own_test_score: float) -> dict[str, float]:
        """Run metrics (also kept as version tags) placing the version's own test score next to the baseline."""

    def metrics_by_split(self, own_test_score: float) -> dict[str, dict[str, float]]:
        """The same figures as run metrics, by the split each was computed on: `test`, `validation`, or `` for
        figures of no split (e.g. seconds), each named without its split (the run names it by the set's dataset).
        Default: all of `metrics` under no split."""
        return {"": self.metrics(own_test_score)}

    @abstractmethod
    def headline(self) -> dict[str, float]:
        """The few figures `prefixctl train` prints about the baseline."""

    @abstractmethod
    def describe(self) -> str:
        """One phrase for a version's description, e.g. 'linear probe macro-F1 0.712 on the same split'."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """JSON-ready, as kept in the run's evaluations.json."""


class TaskKind(ABC):
    """A kind of task: what its predictions are, how it trains, which metrics judge it, which signals watch it.

    Subclasses set the class attributes and implement the abstract methods; the defaults suit a task whose head is a
    sequence head over frozen-base features. Register an instance with `prefix_registry.kinds.register_kind`.
    """

    name: ClassVar[str]
    # The metric that decides (best training state, baseline gate, retrain), its direction, and how people read it.
    decision_metric: ClassVar[str]
    direction: ClassVar[Direction] = Direction.HIGHER
    decision_metric_label: ClassVar[str] = ""
    # What a version is judged against, as people read it (the baseline gate's refusal names it).
    baseline_label: ClassVar[str] = "linear probe"
    # Metrics shown side by side (`prefixctl compare`) and kept as version tags; the decision metric first.
    metric_names: ClassVar[tuple[str, ...]]
    # PEFT's task type of the adapter (peft.TaskType's value).
    peft_task_type: ClassVar[str] = "SEQ_CLS"
    output_signals: ClassVar[tuple[OutputSignal, ...]]
    # Whether feedback labels are judged as classes (live accuracy and macro-F1) in a drift check.
    judges_live_accuracy: ClassVar[bool] = False
    # Whether the head is linear over frozen features and may start from (and be refitted as) a linear probe.
    head_is_linear_probe: ClassVar[bool] = False
    # Whether predictions are written text (a causal LM's greedy decoding) rather than read off a task head: the
    # "head outputs" the methods below take are then an object array of generated strings, one per row.
    generates: ClassVar[bool] = False

    # --- training -------------------------------------------------------------------------------------------------
    @abstractmethod
    def head_width(self, labels: Sequence[str]) -> int:
        """Outputs of the task head for a task with these labels (distinct training values)."""

    @abstractmethod
    def encode_targets(self, values: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """The training targets of `values` (the `label` column), as the loss takes them."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """The training loss of head `outputs` (batch, head_width) against encoded `targets`."""

    def target_weights(self, targets: np.ndarray, labels: Sequence[str], weighting: str) -> torch.Tensor | None:
        """Per-target weights of the loss (class weights), or None for an unweighted loss."""
        return None

    # --- predictions ----------------------------------------------------------------------------------------------
    @abstractmethod
    def predicted(self, outputs: np.ndarray, labels: Sequence[str]) -> list[Any]:
        """What each row of head `outputs` predicts, in the form `metrics` compares with the true values."""

    @abstractmethod
    def prediction_columns(self, outputs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
        """Columns describing the predictions (a version's drift reference file keeps them next to text and label)."""

    @abstractmethod
    def logged_prediction(self, outputs: np.ndarray, labels: Sequence[str]) -> LoggedPrediction:
        """One row of head outputs (head_width,) as the prediction log stores it."""

    def score_column(self, name: str) -> str:
        """The DataFrame column of a logged score (`LoggedPrediction.scores` key)."""
        return f"score_{name}"

    def model_columns(self, outputs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
        """The columns a version answers with as an MLflow model (`mlflow.pyfunc`, `mlflow models serve`), one value
        per row of head `outputs`. Default: the `prediction_columns`."""
        return self.prediction_columns(outputs, labels)

    def model_schema(self, labels: Sequence[str]) -> dict[str, str]:
        """Column -> MLflow column type (`string`, `double`, `long`, `boolean`) of `model_columns`: the output half of
        a version's MLflow signature. Default: read off the columns of one all-zero row of head outputs."""
        row = np.zeros((1, self.head_width(labels)), dtype=np.float32)
        return {name: _column_type(values) for name, values in self.model_columns(row, labels).items()}

    # --- drift windows --------------------------------------------------------------------------------------------
    @property
    def signal_columns(self) -> list[str]:
        return [signal.column for signal in self.output_signals]

    @abstractmethod
    def reference_outputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The output signal columns of a reference file (written from `prediction_columns`)."""

    @abstractmethod
    def logged_outputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The output signal columns of prediction-log rows (empty columns for an empty frame)."""

    # --- judging --------------------------------------------------------------------------------------------------
    @abstractmethod
    def metrics(self, true_values: Sequence[str], predicted: Sequence[Any], labels: Sequence[str]) -> dict[str, Any]:
        """Metrics of `predicted` against `true_values`: at least every name of `metric_names`, and `n`."""

    def flat_metrics(self, metrics: dict[str, Any], prefix: str, separator: str = "_") -> dict[str, float]:
        """`{prefix}{separator}{name}` for every number of `metrics` but `n`, as plain floats, for MLflow (the
        separator `/` names a metric of an evaluation set: `eval/<dataset>/<name>`)."""
        return {
            f"{prefix}{separator}{name}": float(value)
            for name, value in metrics.items()
            if name != "n" and isinstance(value, int | float) and not isinstance(value, bool)
        }

    def headline(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The figures a retrain decision reports per set."""
        return {**{name: metrics[name] for name in self.metric_names}, "n": metrics["n"]}

    def describe_scores(self, metrics: dict[str, Any]) -> str:
        """The scores of one set as people read them, e.g. 'macro-F1 0.712, accuracy 0.700 (n=20)' (without the
        count when `metrics` has no `n`)."""
        scores = ", ".join(f"{name} {metrics[name]:.3f}" for name in self.metric_names)
        return f"{scores} (n={metrics['n']})" if "n" in metrics else scores

    def better(self, candidate: float, incumbent: float | None) -> bool:
        """Whether `candidate` is strictly better than `incumbent` on the decision metric (anything beats None)."""
        if incumbent is None:
            return True
        return candidate > incumbent if self.direction is Direction.HIGHER else candidate < incumbent

    def gain(self, challenger: float, champion: float) -> float:
        """How much better `challenger` is than `champion` on the decision metric (negative: worse)."""
        return challenger - champion if self.direction is Direction.HIGHER else champion - challenger

    @property
    def label(self) -> str:
        """The decision metric as people read it."""
        return self.decision_metric_label or self.decision_metric

    def live_quality(self, reference: pd.DataFrame, current: pd.DataFrame, min_labelled: int) -> dict[str, Any] | None:
        """Live quality of a drift window's feedback-labelled rows (`TRUE_VALUE` set) against the reference window's,
        or None when the kind does not judge it. An `accuracy_drop` entry becomes the drift check's quality signal."""
        return None

    @property
    def has_baseline(self) -> bool:
        """Whether the kind fits a baseline (overrides `fit_baseline`): a sweep judges its best trial against it."""
        return type(self).fit_baseline is not TaskKind.fit_baseline

    def fit_baseline(self, inputs: BaselineInputs, started: float) -> Baseline | None:
        """The baseline a version of this kind has to beat, fitted on frozen-base features (`started`: the
        `time.perf_counter()` when measuring began, features included); None when the kind has no baseline."""
        return None

    # Names of metrics and tags derived from the decision metric, so that stored names follow the kind.
    @property
    def version_metric(self) -> str:
        """A version's own-test score on the decision metric, as a version tag metric."""
        return f"own_test_{self.decision_metric}"

    @property
    def baseline_metric(self) -> str:
        """The baseline's test score on the decision metric, as a version tag metric."""
        return f"baseline_probe_test_{self.decision_metric}"

    def tagged_metric(self, name: str) -> bool:
        """Whether a flat metric is kept as a version tag (`metric.<name>`)."""
        return name.endswith(tuple(f"_{metric}" for metric in self.metric_names)) or name.startswith("baseline_")


def _column_type(values: Any) -> str:
    """The MLflow column type of a column's values (a list or an array)."""
    kind = np.asarray(values).dtype.kind
    if kind == "b":
        return "boolean"
    if kind in "iu":
        return "long"
    if kind == "f":
        return "double"
    return "string"
