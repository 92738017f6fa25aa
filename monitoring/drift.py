"""Judge a window of live traffic against a reference window, with Evidently.

    reference window (e.g. the serving version's validation texts and predictions)
    current window   (recent logged predictions)      --detect_drift-->  DriftVerdict (+ Evidently HTML report)

Signals:
    input:      text_length, oov_rate (Evidently ValueDrift on text descriptors), embedding (a domain classifier on
                the base model's sentence embeddings, an Evidently embedding-drift method called directly: its
                report widget would run a t-SNE taking tens of seconds)
    prediction: the output signals of the task's kind (classification: predicted_label, the label distribution, and
                confidence)
    quality:    accuracy and macro-F1 of the window's feedback-labelled rows, against the reference accuracy (kinds
                whose feedback labels are classes)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from prefix_registry.errors import ConfigError
from prefix_registry.kinds import CLASSIFICATION, TRUE_VALUE, TaskKind
from prefix_registry.monitoring.drift_config import DriftConfig, SignalConfig

if TYPE_CHECKING:
    from prefix_registry.monitoring.drift_report import EmbeddingSample

INPUT_SIGNALS = ("text_length", "oov_rate", "embedding")
PREDICTION_SIGNALS = tuple(CLASSIFICATION.signal_columns)  # a classification task's; others: `kind.signal_columns`
# Evidently methods whose score is a p-value (drift when below the threshold); the others are distances.
P_VALUE_METHODS = {
    "ks",
    "chisquare",
    "z",
    "t_test",
    "mannw",
    "fisher_exact",
    "g_test",
    "cramer_von_mises",
    "anderson",
    "empirical_mmd",
    "epps_singleton",
}
DISTANCE_METHODS = {"wasserstein", "jensenshannon", "hellinger", "kl_div", "psi", "energy", "tvd"}
WINDOW_COLUMNS = ["text", *PREDICTION_SIGNALS, TRUE_VALUE]  # a classification task's window


def window_columns(task_kind: TaskKind) -> list[str]:
    """The columns of a drift window of `task_kind`: the text, the kind's output signals, the true label."""
    return ["text", *task_kind.signal_columns, TRUE_VALUE]


class DriftStatus(StrEnum):
    """What one drift check found. The value is what a monitoring run's `prefix_registry.drift_status` tag, the
    verdict file and `prefixctl monitor` say, so runs recorded before this enum read the same."""

    OK = "ok"
    DRIFT = "drift"
    INSUFFICIENT_DATA = "insufficient_data"  # a window too small to judge


@dataclass
class DriftWindow:
    """Rows to compare: `text`, the output signal columns of `task_kind` (classification: `predicted_label`,
    `confidence`) and `true_label` (None where unknown)."""

    frame: pd.DataFrame
    kind: str
    details: dict[str, Any] = field(default_factory=dict)
    task_kind: TaskKind = CLASSIFICATION

    def __post_init__(self) -> None:
        columns = window_columns(self.task_kind)
        missing = [c for c in columns if c not in self.frame.columns]
        if missing:
            raise ValueError(f"a drift window needs columns {columns}; missing {missing}")
        self.frame = self.frame[columns].reset_index(drop=True)

    @classmethod
    def of_logged(
        cls,
        frame: pd.DataFrame,
        kind: str,
        details: dict[str, Any] | None = None,
        task_kind: TaskKind = CLASSIFICATION,
    ) -> DriftWindow:
        """A window of prediction-log rows (`text`, the kind's logged outputs, `feedback_label`)."""
        rows = pd.concat(
            [
                pd.DataFrame({"text": frame.get("text", pd.Series(dtype=str))}),
                task_kind.logged_outputs(frame),
                pd.DataFrame({TRUE_VALUE: frame.get("feedback_label", pd.Series(dtype=object))}),
            ],
            axis=1,
        )
        return cls(rows, kind=kind, details=dict(details or {}), task_kind=task_kind)

    @classmethod
    def of_reference(
        cls,
        frame: pd.DataFrame,
        kind: str,
        details: dict[str, Any] | None = None,
        task_kind: TaskKind = CLASSIFICATION,
    ) -> DriftWindow:
        """A window of a version's reference file (`text`, `label` and the kind's prediction columns), kept at
        training."""
        rows = pd.concat(
            [
                pd.DataFrame({"text": frame["text"]}),
                task_kind.reference_outputs(frame),
                pd.DataFrame({TRUE_VALUE: frame["label"]}),
            ],
            axis=1,
        )
        return cls(rows, kind=kind, details=dict(details or {}), task_kind=task_kind)

    @property
    def size(self) -> int:
        return len(self.frame)

    def describe(self) -> dict[str, Any]:
        labelled = int(self.frame["true_label"].notna().sum())
        return {"kind": self.kind, "size": self.size, "labelled": labelled, **self.details}


@dataclass(frozen=True)
class SignalResult:
    """One signal's judgement.

    `drifted`: the score is past the threshold. `alarm_enabled`: the configuration lets this signal raise the alarm
    on its own. `alarm`: both, i.e. this signal is one reason the verdict says "drift".
    """

    name: str
    group: str
    method: str
    score_kind: str  # "distance", "p_value" or "roc_auc"
    score: float
    threshold: float
    drifted: bool
    alarm_enabled: bool

    @property
    def alarm(self) -> bool:
        return self.drifted and self.alarm_enabled

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alarm": self.alarm}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SignalResult:
        known = {f.name for f in fields(cls)}
        if "alarm_enabled" not in values:
            # Verdicts written before 0.2 called the configuration's flag `alarm`.
            values = {**values, "alarm_enabled": values.get("alarm", True)}
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass(frozen=True)
class DriftVerdict:
    """The answer of one drift check: the one shape it has from `detect_drift` to the retrain it may start.

    Written to a monitoring run as `drift/verdict.json` by `to_dict()` and read back by `from_dict()`; printed by
    `prefixctl monitor --json`.
    """

    task: str
    version: str
    status: DriftStatus
    reference: dict[str, Any]
    current: dict[str, Any]
    signals: dict[str, SignalResult] = field(default_factory=dict)
    quality: dict[str, Any] | None = None
    message: str = ""
    checked_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    seconds: float = 0.0

    def __post_init__(self) -> None:
        # A status given as its text (a verdict file, a test, an older caller) becomes the enum it names.
        try:
            object.__setattr__(self, "status", DriftStatus(self.status))
        except ValueError:
            raise ValueError(
                f"drift status must be one of {[s.value for s in DriftStatus]}, got {self.status!r}"
            ) from None

    @property
    def drift_detected(self) -> bool:
        return self.status is DriftStatus.DRIFT

    @property
    def drifted_signals(self) -> list[str]:
        """The signals that raised the alarm (past their threshold and allowed to alarm)."""
        return [name for name, signal in self.signals.items() if signal.alarm]

    @property
    def window_sizes(self) -> dict[str, int | None]:
        return {"reference": self.reference.get("size"), "current": self.current.get("size")}

    @property
    def current_from(self) -> datetime | None:
        """When the current window's first prediction was logged (None for an empty or synthetic window)."""
        start = self.current.get("from")
        return datetime.fromisoformat(start) if start else None

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["status"] = self.status.value
        values["signals"] = {name: signal.to_dict() for name, signal in self.signals.items()}
        values["drift_detected"] = self.drift_detected
        values["drifted_signals"] = self.drifted_signals
        values["window_sizes"] = self.window_sizes
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DriftVerdict:
        """The verdict `to_dict()` wrote (derived keys such as `drifted_signals` are recomputed, not read)."""
        known = {f.name for f in fields(cls)}
        given = {key: value for key, value in values.items() if key in known}
        given["signals"] = {name: SignalResult.from_dict(s) for name, s in (values.get("signals") or {}).items()}
        return cls(**given)


@dataclass
class DriftReport:
    """A drift check's verdict, its HTML reports, and the task kind it was judged as (which names its live quality)."""

    verdict: DriftVerdict
    html_files: dict[str, Path] = field(default_factory=dict)
    task_kind: TaskKind = CLASSIFICATION


Embedder = Callable[[Sequence[str]], np.ndarray]


def detect_drift(
    task: str,
    version: str,
    reference: DriftWindow,
    current: DriftWindow,
    config: DriftConfig,
    oov_rate: Callable[[Sequence[str]], np.ndarray],
    embed: Embedder,
    html_dir: Path | None = None,
) -> DriftReport:
    """Compare `current` with `reference`; write Evidently HTML reports into `html_dir` when given."""
    started = time.perf_counter()
    task_kind = current.task_kind
    if reference.task_kind is not task_kind:
        raise ConfigError(
            f"the reference window is of kind {reference.task_kind.name!r}, the current one of {task_kind.name!r}; "
            "expected windows of one task kind"
        )
    config = _with_kind_signals(config, task_kind)
    _check_methods(config)
    described = (reference.describe(), current.describe())
    if min(reference.size, current.size) < config.min_window:
        message = (
            f"insufficient data: the current window has {current.size} row(s) and the reference "
            f"{reference.size}; at least {config.min_window} each are needed"
        )
        verdict = DriftVerdict(
            task,
            version,
            DriftStatus.INSUFFICIENT_DATA,
            *described,
            message=message,
            seconds=time.perf_counter() - started,
        )
        return DriftReport(verdict, task_kind=task_kind)

    # Evidently (and the report's own metrics) load only when a window is judged.
    from prefix_registry.monitoring.drift_report import (
        EmbeddingDomainClassifier,
        LiveAccuracy,
        LiveMacroF1,
        with_embedding_projection,
    )

    embedding, sample = _embedding_signal(reference.frame, current.frame, config, embed)
    quality = task_kind.live_quality(reference.frame, current.frame, config.min_labelled)
    ref_frame, cur_frame = with_embedding_projection(
        _with_descriptors(reference.frame, oov_rate, task_kind),
        _with_descriptors(current.frame, oov_rate, task_kind),
        sample,
    )
    # One Evidently report holds every signal the verdict uses: the value drifts it computes, the embedding score
    # and live quality as judged here (macro-F1 as in the run's metrics).
    report_metrics = [
        EmbeddingDomainClassifier(method=embedding.method, score=embedding.score, threshold=embedding.threshold)
    ]
    if quality is not None and quality.get("accuracy") is not None:
        report_metrics += [LiveAccuracy(drop_threshold=config.accuracy_drop), LiveMacroF1()]
    evidently_scores, snapshot = _evidently_value_drift(ref_frame, cur_frame, config, report_metrics, task_kind)
    signals = {name: _signal(name, config.signals[name], score) for name, score in evidently_scores.items()}
    signals["embedding"] = embedding
    if quality is not None and quality.get("accuracy_drop") is not None:
        drop = quality["accuracy_drop"]
        signals["accuracy_drop"] = SignalResult(
            "accuracy_drop",
            "quality",
            "reference_accuracy - live_accuracy",
            "distance",
            drop,
            config.accuracy_drop,
            drop > config.accuracy_drop,
            True,
        )
    alarms = [name for name, signal in signals.items() if signal.alarm]
    html_files: dict[str, Path] = {}
    if html_dir is not None:
        html_dir.mkdir(parents=True, exist_ok=True)
        html_files["drift"] = html_dir / "drift_report.html"
        snapshot.save_html(str(html_files["drift"]))
        quality_html = (
            _evidently_quality_html(reference.frame, current.frame, html_dir / "quality_report.html", config)
            if task_kind.judges_live_accuracy
            else None
        )
        if quality_html is not None:
            html_files["quality"] = quality_html
    verdict = DriftVerdict(
        task,
        version,
        DriftStatus.DRIFT if alarms else DriftStatus.OK,
        *described,
        signals=signals,
        quality=quality,
        message=f"drift detected in {', '.join(alarms)}" if alarms else "no drift: every signal is below its threshold",
        seconds=time.perf_counter() - started,
    )
    return DriftReport(verdict, html_files, task_kind)


def _with_kind_signals(config: DriftConfig, task_kind: TaskKind) -> DriftConfig:
    """`config` with a default entry for each output signal of `task_kind` that it does not configure."""
    missing = {
        signal.column: SignalConfig(method=signal.method, threshold=signal.threshold)
        for signal in task_kind.output_signals
        if signal.column not in config.signals
    }
    return config.model_copy(update={"signals": {**config.signals, **missing}}) if missing else config


def _check_methods(config: DriftConfig) -> None:
    for name, signal in config.signals.items():
        if name == "embedding":
            if signal.method not in ("domain_classifier", "distance", "mmd"):
                raise ConfigError(
                    f"embedding drift method must be domain_classifier, distance or mmd; got {signal.method!r}"
                )
        elif signal.method not in P_VALUE_METHODS | DISTANCE_METHODS:
            raise ConfigError(
                f"signal {name}: unknown drift method {signal.method!r}; choose one of "
                f"{sorted(P_VALUE_METHODS | DISTANCE_METHODS)}"
            )


def _with_descriptors(
    frame: pd.DataFrame, oov_rate: Callable[[Sequence[str]], np.ndarray], task_kind: TaskKind = CLASSIFICATION
) -> pd.DataFrame:
    result = frame.copy()
    result["oov_rate"] = oov_rate(result["text"].tolist())
    for signal in task_kind.output_signals:
        result[signal.column] = result[signal.column].astype(str if signal.categorical else float)
    return result


def _evidently_value_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: DriftConfig,
    extra_metrics: Sequence[Any] = (),
    task_kind: TaskKind = CLASSIFICATION,
) -> tuple[dict[str, float], Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.descriptors import TextLength
    from evidently.metrics import ValueDrift

    from prefix_registry.monitoring.drift_report import EMBEDDING_X, EMBEDDING_Y

    outputs = task_kind.output_signals
    # Numerical output signals first, then categorical ones (the order classification's report has always had).
    output_columns = [s.column for s in outputs if not s.categorical] + [s.column for s in outputs if s.categorical]
    columns = ["text_length", "oov_rate", *output_columns]
    numerical = ["oov_rate", *[s.column for s in outputs if not s.categorical], EMBEDDING_X, EMBEDDING_Y]
    categorical = [*[s.column for s in outputs if s.categorical], TRUE_VALUE]
    definition = DataDefinition(text_columns=["text"], numerical_columns=numerical, categorical_columns=categorical)

    def dataset(frame: pd.DataFrame) -> Any:
        return Dataset.from_pandas(
            frame[["text", *numerical, *categorical]],
            data_definition=definition,
            descriptors=[TextLength("text", alias="text_length")],
        )

    metrics = [
        ValueDrift(column=c, method=config.signals[c].method, threshold=config.signals[c].threshold) for c in columns
    ]
    snapshot = Report([*metrics, *extra_metrics]).run(dataset(current), dataset(reference))
    scores: dict[str, float] = {}
    for result in snapshot.dict()["metrics"]:
        column = result.get("config", {}).get("column")
        if column in columns:
            scores[column] = float(result["value"])
    missing = set(columns) - set(scores)
    if missing:
        raise RuntimeError(f"Evidently returned no drift score for {sorted(missing)}")
    return scores, snapshot


def _signal(name: str, signal: SignalConfig, score: float) -> SignalResult:
    is_p_value = signal.method in P_VALUE_METHODS
    drifted = score < signal.threshold if is_p_value else score > signal.threshold
    group = "input" if name in INPUT_SIGNALS else "prediction"
    return SignalResult(
        name,
        group,
        signal.method,
        "p_value" if is_p_value else "distance",
        score,
        signal.threshold,
        bool(drifted),
        signal.alarm,
    )


def _embedding_signal(
    reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig, embed: Embedder
) -> tuple[SignalResult, EmbeddingSample]:
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import (
        DistanceDriftMethod,
        MMDDriftMethod,
        ModelDriftMethod,
    )

    from prefix_registry.monitoring.drift_report import EmbeddingSample

    signal = config.signals["embedding"]
    rng = np.random.default_rng(config.seed)

    def sample(frame: pd.DataFrame) -> np.ndarray:
        if len(frame) <= config.max_embedding_samples:
            return np.arange(len(frame))
        return np.sort(rng.choice(len(frame), config.max_embedding_samples, replace=False))

    ref_rows, cur_rows = sample(reference), sample(current)
    ref_vectors = embed(reference["text"].iloc[ref_rows].tolist())
    cur_vectors = embed(current["text"].iloc[cur_rows].tolist())
    # Evidently wants one numeric column per dimension.
    columns = [f"e{i}" for i in range(ref_vectors.shape[1])]
    ref_df, cur_df = pd.DataFrame(ref_vectors, columns=columns), pd.DataFrame(cur_vectors, columns=columns)
    if signal.method == "domain_classifier":
        method: Any = ModelDriftMethod(threshold=signal.threshold, bootstrap=False)
        kind = "roc_auc"
    elif signal.method == "mmd":
        method, kind = MMDDriftMethod(threshold=signal.threshold, bootstrap=False), "distance"
    else:
        method, kind = DistanceDriftMethod(dist="cosine", threshold=signal.threshold, bootstrap=False), "distance"
    score, drifted, _ = method(cur_df, ref_df)
    result = SignalResult(
        "embedding", "input", signal.method, kind, float(score), signal.threshold, bool(drifted), signal.alarm
    )
    return result, EmbeddingSample(ref_rows, ref_vectors, cur_rows, cur_vectors)


def _evidently_quality_html(
    reference: pd.DataFrame, current: pd.DataFrame, path: Path, config: DriftConfig
) -> Path | None:
    """Live quality on the labelled rows of both windows, macro-averaged and by label, when there are enough.

    Not Evidently's ClassificationPreset: with two labels it reports the positive class's F1, not the macro-F1 the
    verdict and the run's `live_macro_f1` use.
    """
    labelled_current = current[current["true_label"].notna()]
    labelled_reference = reference[reference["true_label"].notna()]
    if len(labelled_current) < config.min_labelled or len(labelled_reference) < config.min_window:
        return None
    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.metrics import F1ByLabel, PrecisionByLabel, RecallByLabel

    from prefix_registry.monitoring.drift_report import LiveAccuracy, LiveMacroF1

    labels = sorted(set(labelled_reference["true_label"].astype(str)) | set(labelled_current["true_label"].astype(str)))
    if len(labels) == 2:
        # Evidently takes two classes down its binary path, which needs to know which label is "positive".
        task: Any = BinaryClassification(target="true_label", prediction_labels="predicted_label", pos_label=labels[1])
    else:
        task = MulticlassClassification(target="true_label", prediction_labels="predicted_label")
    definition = DataDefinition(categorical_columns=["true_label", "predicted_label"], classification=[task])

    def dataset(frame: pd.DataFrame) -> Any:
        data = frame[["true_label", "predicted_label"]].astype(str)
        return Dataset.from_pandas(data, data_definition=definition)

    metrics = [LiveAccuracy(drop_threshold=config.accuracy_drop), LiveMacroF1(), F1ByLabel(), PrecisionByLabel()]
    snapshot = Report([*metrics, RecallByLabel()]).run(dataset(labelled_current), dataset(labelled_reference))
    snapshot.save_html(str(path))
    return path
