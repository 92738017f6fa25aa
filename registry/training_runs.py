"""Train a prefix and register it: data -> train -> evaluate -> adapter files -> MLflow run -> new version.

Everything that can be refused (task name, data, config, base model) is checked before the MLflow run starts, so a
bad request leaves the registry as it was; a failure during training marks the run FAILED and registers nothing.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from prefix_registry.errors import BelowBaseline
from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.engine import head_outputs
from prefix_registry.inference.resident import ResidentBase, attach_adapter
from prefix_registry.kinds import CLASSIFICATION, Baseline, TaskKind
from prefix_registry.registry.aliases import CHAMPION
from prefix_registry.registry.eval_sets import (
    BASELINE_TEST_SPLIT,
    BASELINE_VALIDATION_SPLIT,
    OWN_TEST,
    REFERENCE_TEST,
    baseline_metrics,
    dataset_inputs,
    eval_set_tags,
    reference_set_name,
    scores_by_set,
    set_names,
    split_set_name,
    version_eval_sets,
)
from prefix_registry.registry.mlflow_model import add_mlflow_model
from prefix_registry.registry.runs import RecordedRun, close_stale_runs
from prefix_registry.registry.store import PrefixRegistry, validate_task_name
from prefix_registry.registry.version_notes import Origin, origin_markdown, run_link
from prefix_registry.registry.versions import (
    ADAPTER_SHA256_FULL_TAG,
    METRIC_TAG_PREFIX,
    SHORT_HASH,
    TAG_ADAPTER_SHA256,
    TAG_BASE,
    TAG_BASE_FINGERPRINT,
    TAG_BASELINE,
    TAG_DATA_FINGERPRINT,
    TAG_DATA_ORIGIN,
    TAG_DATA_WINDOW,
    TAG_KIND,
    TAG_LABELS,
    TAG_METHOD,
    TAG_PARENT,
    TAG_TRIGGER,
    TAG_TRIGGER_REASON,
    PrefixVersion,
    integrity_tags,
    list_tag_value,
)
from prefix_registry.training.adapter_files import ADAPTER_WEIGHTS, save_adapter, save_checkpoint
from prefix_registry.training.adapter_integrity import RegisteredIntegrity, registration_record
from prefix_registry.training.base_models import LoadedBase, load_base_for_kind, resolve_base
from prefix_registry.training.baseline import measure_kind_baseline
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.data import LabelledTexts
from prefix_registry.training.generation import measure_zero_shot
from prefix_registry.training.splits import DataSplits, split_for_kind
from prefix_registry.training.trainer import EpochReport, TrainedPrefix, train_prefix

MLFLOW_RUN_NAME = "mlflow.runName"
logger = logging.getLogger(__name__)

REFERENCE_FILE = "validation.parquet"
TRIGGER_REASON_FILE = "trigger_reason.json"
MAX_TRIGGER_SUMMARY = 200


@dataclass
class TrainOutcome:
    """What `prefixctl train` reports."""

    task: str
    version: str
    run_id: str
    metrics: dict[str, float]
    trainable_params: int
    total_params: int
    adapter_bytes: int
    train_seconds: float
    method: str
    base: str
    promoted: bool
    best_epoch: float
    steps: int
    split_sizes: dict[str, int]
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    beats_baseline: bool | None = None
    kind: TaskKind = CLASSIFICATION  # the task kind that names `metrics` (not in the summary)

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "version": self.version,
            "run_id": self.run_id,
            "metrics": self.metrics,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "adapter_bytes": self.adapter_bytes,
            "train_seconds": round(self.train_seconds, 2),
            "method": self.method,
            "base": self.base,
            "promoted": self.promoted,
            "best_epoch": self.best_epoch,
            "steps": self.steps,
            "split_sizes": self.split_sizes,
            "beats_baseline": self.beats_baseline,
        }


def predictions_frame(frame: pd.DataFrame, served: AttachedPrefix, kind: TaskKind, batch_size: int) -> pd.DataFrame:
    """`frame` (text, label, ...) with the columns `kind` describes its predictions with (classification: predicted
    label, confidence and one probability column per class), predicted by the engine that serves `served`."""
    result = frame.reset_index(drop=True).copy()
    outputs = head_outputs(served, result["text"].tolist(), batch_size=batch_size).numpy()
    for column, values in kind.prediction_columns(outputs, served.labels).items():
        result[column] = values
    return result


def evaluate_served(served: AttachedPrefix, kind: TaskKind, frame: pd.DataFrame, batch_size: int) -> dict[str, Any]:
    """`kind`'s metrics of `served` on a labelled frame (`text`, `label`), through the serving engine."""
    outputs = head_outputs(served, frame["text"].tolist(), batch_size=batch_size).numpy()
    return kind.metrics(frame["label"].tolist(), kind.predicted(outputs, served.labels), served.labels)


@dataclass
class RecordedTraining:
    """A trained adapter whose run holds its params, metrics and artifacts, ready to be registered as a version."""

    run_id: str
    artifact_uri: str
    trained: TrainedPrefix
    baseline: Baseline | None
    test_metrics: dict[str, Any]
    evaluations: dict[str, dict[str, Any]]
    # Role-named figures (`own_test_<metric>`, `baseline_...`): the version's `metric.*` tags. The run's metrics name
    # each set by its dataset instead (eval_sets.py), logged at registration, once the version number names them.
    tag_metrics: dict[str, float]
    adapter_sha256: str
    adapter_bytes: int
    # The adapter folder's digest, file list and signature, as the registry keeps them (adapter_integrity.py).
    integrity: RegisteredIntegrity | None = None
    # The labelled frames behind `evaluations` (own_test, reference_test, fresh_holdout...), logged as datasets.
    evaluation_frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    # The name of the validation split its curves (and its baseline's probe choice) are named by (eval_sets.py).
    validation_set: str = ""


def train_and_register(
    registry: PrefixRegistry,
    task: str,
    data: LabelledTexts,
    config: TrainConfig,
    *,
    promote: bool = False,
    force: bool = False,
    reason: str | None = None,
    alias: str | None = None,
    trigger: str = "manual",
    trigger_reason: str | None = None,
    trigger_summary: str | None = None,
    trigger_run_id: str | None = None,
    parent: PrefixVersion | None = None,
    warm_start: dict[str, torch.Tensor] | None = None,
    splits: DataSplits | None = None,
    extra_evaluations: dict[str, pd.DataFrame] | None = None,
    extra_tags: dict[str, str] | None = None,
    reference: pd.DataFrame | None = None,
    progress: bool = True,
) -> TrainOutcome:
    """Train on `data` (or on the given `splits`) and register the result as a new version of `task`.

    Every run also fits the linear probe on the same split (the version's baseline, in its metrics and tags).

    Args:
        promote: point `champion` at the new version when it is registered; refused (the version stays registered)
            when it does not beat its baseline, unless `force` with a `reason`.
        alias: point this alias (e.g. `challenger`) at the new version instead.
        trigger_reason: the full reason (e.g. a drift verdict's JSON): the run's trigger_reason.json artifact.
        trigger_summary: one line saying why, the version's `trigger_reason` tag (default: the reason, cut short).
        trigger_run_id: the run that caused this one (a monitoring run), linked from the version's description.
        parent: the version this one descends from (lineage; its checkpoint is `warm_start` when given).
        extra_evaluations: named labelled frames evaluated and logged, once registered, as `eval/<dataset>/...` and
            as MLflow datasets (`reference_test`, `fresh_holdout`: see eval_sets.py), so versions compare on the same
            sets.
        extra_tags: more version tags (e.g. the drift verdict that triggered a retrain).
        reference: labelled texts whose predictions become the version's drift reference window (default: the
            validation split); a retrained version takes the fresh traffic it was judged on.
    """
    validate_task_name(task)
    kind = config.task_kind
    splits = splits or split_for_kind(
        data, config.validation_fraction, config.test_fraction, config.seed, generates=kind.generates
    )
    base_ref = resolve_base(config.base, registry.settings.resolved_cache_dir)
    base = load_base_for_kind(base_ref, splits.labels, seed=config.seed, kind=kind)
    registry.ensure_task(task)
    # Runs of this task whose process died (kill -9, OOM) or lost MLflow mid-run: KILLED, with the reason.
    close_stale_runs(registry, task)

    with RecordedRun(
        registry,
        task,
        run_name=f"train {task} {config.method.value} ({trigger})",
        kind="train",
        tags={TAG_TRIGGER: trigger},
    ) as run:
        recorded = train_in_run(
            run,
            base,
            data,
            splits,
            config,
            trigger=trigger,
            trigger_reason=trigger_reason,
            parent=parent,
            warm_start=warm_start,
            extra_evaluations=extra_evaluations,
            reference=reference,
            progress=progress,
        )
        version = register_recorded(
            registry,
            task,
            data,
            recorded,
            trigger=trigger,
            trigger_reason=trigger_summary or trigger_reason,
            trigger_run_id=trigger_run_id,
            parent=parent,
            extra_tags=extra_tags,
        )

    promoted = False
    if promote:
        try:
            registry.promote(
                task, version.version, CHAMPION, reason=reason or f"trained with --promote ({trigger})", force=force
            )
        except BelowBaseline as refusal:
            raise BelowBaseline(f"{refusal}; version {version.version} is registered but not promoted") from None
        promoted = True
    if alias:
        registry.promote(task, version.version, alias, reason=f"registered as {alias} ({trigger})")
    return outcome_of(task, version.version, recorded, splits, promoted)


def train_in_run(
    run: RecordedRun,
    base: LoadedBase,
    data: LabelledTexts,
    splits: DataSplits,
    config: TrainConfig,
    *,
    trigger: str = "manual",
    trigger_reason: str | None = None,
    parent: PrefixVersion | None = None,
    warm_start: dict[str, torch.Tensor] | None = None,
    extra_evaluations: dict[str, pd.DataFrame] | None = None,
    reference: pd.DataFrame | None = None,
    baseline: Baseline | None = None,
    measure: bool = True,
    progress: bool = True,
) -> RecordedTraining:
    """Train, evaluate, fit the baseline (unless given, or `measure` is False) and log to `run` what is known before
    registration: params, the per-evaluation curves (`curve/<split set>/...`, step = optimizer step) and figures of
    no set at step 0. Scores on named sets are logged by `label_registered_run` (their names need the version)."""
    run.log_params(
        {
            **config.to_dict(),
            "data_origin": data.origin,
            "data_fingerprint": data.fingerprint,
            "rows_train": len(splits.train),
            "rows_validation": len(splits.validation),
            "rows_test": len(splits.test),
            "labels": splits.labels,
            "parent_version": parent.version if parent else "",
            "warm_start": warm_start is not None,
            "trigger": trigger,
        }
    )
    train_set, validation_set = (
        split_set_name(run.task, name, getattr(splits, name)) for name in ("train", "validation")
    )

    def log_curves(report: EpochReport) -> None:
        run.log_evaluation(report, train_set, validation_set)

    trained = train_prefix(base, splits, config, on_evaluation=log_curves, warm_start=warm_start, progress=progress)
    with tempfile.TemporaryDirectory(prefix="prefix-run-") as scratch:
        folder = Path(scratch)
        manifest = save_adapter(
            trained,
            folder / "adapter",
            data_fingerprint=data.fingerprint,
            parent_version=parent.version if parent else None,
            trigger=trigger,
            trigger_reason=trigger_reason,
        )
        kind = trained.kind
        # Scored by the engine that will serve it, from the files just written: registered metrics are what serves.
        # A kind that generates: greedy decoding of the trained PEFT adapter scores it (the generation engine that
        # serves it writes the same text).
        served = (
            None
            if kind.generates
            else attach_adapter(ResidentBase(trained.base), run.task, "new", folder / "adapter", manifest)
        )
        score = _scorer(trained, served)
        test_metrics = score(splits.test)
        evaluations = {OWN_TEST: test_metrics, "best_validation": trained.best_validation}
        frames = {OWN_TEST: splits.test}
        if parent is None:
            # A first version's own test split is the reference set its successors are judged on: one name, one set.
            evaluations[REFERENCE_TEST], frames[REFERENCE_TEST] = test_metrics, splits.test
        for name, frame in (extra_evaluations or {}).items():
            evaluations[name] = score(frame)
            frames[name] = frame
        if baseline is None and measure and kind.generates:
            baseline = measure_zero_shot(
                trained.model.get_base_model(),  # the bare base: prompt methods leave its forward untouched
                base.tokenizer,
                splits.test,
                config.instruction,
                config.max_length,
                config.max_new_tokens,
                config.eval_batch_size,
            )
        elif baseline is None and measure:
            baseline = measure_kind_baseline(
                base.ref, splits, config.max_length, config.eval_batch_size, progress=progress, kind=kind
            )
        tag_metrics: dict[str, float] = {}
        for name, metrics in evaluations.items():
            tag_metrics.update(kind.flat_metrics(metrics, name))
        if baseline is not None:
            tag_metrics.update(baseline.metrics(test_metrics[kind.decision_metric]))
        adapter_bytes = (folder / "adapter" / ADAPTER_WEIGHTS).stat().st_size
        signing_key = run.registry.settings.signing_key_text
        integrity = registration_record(folder / "adapter", signing_key)
        if not kind.generates:  # a generating version is not an MLflow pyfunc model yet (issue 23's serving part)
            # The adapter folder is the version's source: MLflow's files beside it make the version an MLflow model.
            integrity = add_mlflow_model(
                folder / "adapter", run.task, run.run_id, manifest, kind, integrity, signing_key
            )
        # Figures of the run, on no set: at step 0, so that MLflow's charts compare runs, not training steps.
        run.log_metrics(
            {
                "best_epoch": trained.best_epoch,
                "train_seconds": trained.train_seconds,
                "optimizer_steps": trained.steps,
                "trainable_params": trained.trainable_params,
                "total_params": trained.total_params,
                "adapter_bytes": adapter_bytes,
            },
            step=0,
        )
        if trigger_reason:
            run.registry.gateway.log_text(run.run_id, trigger_reason, TRIGGER_REASON_FILE)
        save_checkpoint(trained, folder / "checkpoint")
        _write_reference_and_splits(trained, served, splits, folder, reference)
        for sub in ("adapter", "checkpoint", "reference", "data"):
            run.log_artifacts(folder / sub, sub)
        run.log_json(
            {
                **evaluations,
                "baseline": baseline.summary() if baseline else None,
                "training": {
                    "stop_reason": trained.stop_reason,
                    "class_weights": trained.class_weights,
                    "head_probe": trained.head_probe,
                    "head_refit": trained.head_refit,
                    "precision": trained.precision.value,
                },
            },
            "evaluations.json",
        )
    if baseline is not None:
        run.set_tags({TAG_BASELINE: baseline_verdict(test_metrics[kind.decision_metric], baseline, kind)})
    return RecordedTraining(
        run_id=run.run_id,
        artifact_uri=run.artifact_uri,
        trained=trained,
        baseline=baseline,
        test_metrics=test_metrics,
        evaluations=evaluations,
        tag_metrics=tag_metrics,
        adapter_sha256=manifest.adapter_sha256,
        adapter_bytes=adapter_bytes,
        integrity=integrity,
        evaluation_frames=frames,
        validation_set=validation_set,
    )


def baseline_verdict(own_test_score: float, baseline: Baseline, kind: TaskKind) -> str:
    """`beats` when the version's own-test score is better than its baseline's on the kind's decision metric."""
    return "beats" if kind.better(own_test_score, baseline.test_score) else "below"


def register_recorded(
    registry: PrefixRegistry,
    task: str,
    data: LabelledTexts,
    recorded: RecordedTraining,
    *,
    trigger: str = "manual",
    trigger_reason: str | None = None,
    trigger_run_id: str | None = None,
    parent: PrefixVersion | None = None,
    extra_tags: dict[str, str] | None = None,
) -> PrefixVersion:
    """Register the recorded run's adapter as a new version of `task`, tagged with lineage, metrics and baseline,
    described in markdown, its evaluation sets logged as the run's MLflow datasets."""
    tags = version_tags(data, recorded, trigger=trigger, trigger_reason=trigger_reason, parent=parent)
    # The monitoring run lives in the task's monitoring experiment (older ones in its training experiment).
    link = (
        run_link(registry.run(trigger_run_id).info.experiment_id, trigger_run_id, "monitoring run")
        if trigger_run_id
        else None
    )
    version = registry.register_version(
        task,
        recorded.run_id,
        recorded.artifact_uri,
        {**tags, **(extra_tags or {})},
        describe(data, recorded, trigger, parent, trigger_summary=tags.get(TAG_TRIGGER_REASON), trigger_link=link),
    )
    method = recorded.trained.config.method.value
    return label_registered_run(
        registry,
        version,
        f"{method} ({trigger})",
        recorded.run_id,
        recorded.evaluation_frames,
        parent,
        RegisteredScores.of(recorded),
    )


@dataclass(frozen=True)
class RegisteredScores:
    """What a registered version was scored: by role (`own_test`, `reference_test`, ...), as its kind's nested
    metrics, and its baseline's figures by split (`Baseline.metrics_by_split`); JSON-ready (a sweep trial sends it)."""

    by_role: dict[str, dict[str, Any]]
    baseline_by_split: dict[str, dict[str, float]] = field(default_factory=dict)
    validation_set: str = ""  # the validation split's name, as its curves have it

    @classmethod
    def of(cls, recorded: RecordedTraining) -> RegisteredScores:
        kind = recorded.trained.kind
        own = recorded.test_metrics[kind.decision_metric]
        split = recorded.baseline.metrics_by_split(own) if recorded.baseline is not None else {}
        return cls(dict(recorded.evaluations), split, recorded.validation_set)


def label_registered_run(
    registry: PrefixRegistry,
    version: PrefixVersion,
    what: str,
    run_id: str,
    frames: dict[str, pd.DataFrame],
    parent: PrefixVersion | None,
    scores: RegisteredScores,
) -> PrefixVersion:
    """Name `run_id` after the version it became ("sentiment v2 prefix (drift)", so the runs list and the compare
    view read names, not ids), log the sets it was scored on as the run's MLflow datasets, and its scores on them
    as `eval/<dataset>/...` (and its baseline's as `baseline/<dataset>/...`), at step 0."""
    task = version.task
    registry.gateway.set_run_tags(
        run_id, {"prefix_registry.version": version.version, MLFLOW_RUN_NAME: f"{task} v{version.version} {what}"}
    )
    reference = (reference_set_name(task, parent.version, parent.tags), parent.run_id) if parent else None
    sets = version_eval_sets(task, version.version, run_id, frames, reference)
    kind = version.kind
    metrics = scores_by_set(kind, sets, scores.by_role)
    names = set_names(sets)
    # The probe is scored on the version's own test split and chosen on its validation split (named as its curves).
    split_names = {BASELINE_VALIDATION_SPLIT: scores.validation_set} if scores.validation_set else {}
    if OWN_TEST in names:
        split_names[BASELINE_TEST_SPLIT] = names[OWN_TEST]
    metrics.update(baseline_metrics(scores.baseline_by_split, split_names))
    if metrics:
        registry.log_run_metrics(run_id, metrics, step=0)
    if sets:
        registry.log_dataset_inputs(run_id, dataset_inputs(sets))
        registry.set_version_tags(task, version.version, eval_set_tags(sets))
        version = registry.version(task, version.version)
    return version


def version_tags(
    data: LabelledTexts,
    recorded: RecordedTraining,
    *,
    trigger: str = "manual",
    trigger_reason: str | None = None,
    parent: PrefixVersion | None = None,
) -> dict[str, str]:
    """The tags a version of this recorded run carries: what it is, where it came from, how it scored against its
    baseline (its scores are its run's metrics)."""
    trained = recorded.trained
    kind = trained.kind
    tags = {
        TAG_METHOD: trained.config.method.value,
        TAG_BASE: trained.base.ref.name,
        # Short hashes for people; the adapter manifest holds every full one.
        TAG_BASE_FINGERPRINT: trained.base.fingerprint[:SHORT_HASH],
        TAG_DATA_FINGERPRINT: data.fingerprint[:SHORT_HASH],
        TAG_DATA_ORIGIN: data.origin[:500],
        TAG_DATA_WINDOW: f"{data.origin[:80]} ({len(data)} rows)",
        TAG_ADAPTER_SHA256: recorded.adapter_sha256[:SHORT_HASH],
        ADAPTER_SHA256_FULL_TAG: recorded.adapter_sha256,
        **(integrity_tags(recorded.integrity) if recorded.integrity else {}),
        TAG_TRIGGER: trigger,
        TAG_PARENT: parent.version if parent else "",
        TAG_LABELS: list_tag_value(trained.labels),
        TAG_KIND: kind.name,
        **{
            f"{METRIC_TAG_PREFIX}{key}": f"{value:.4f}"
            for key, value in recorded.tag_metrics.items()
            if kind.tagged_metric(key)
        },
    }
    if recorded.baseline is not None:
        tags[TAG_BASELINE] = baseline_verdict(recorded.test_metrics[kind.decision_metric], recorded.baseline, kind)
    if trigger_reason and not trigger_reason.lstrip().startswith(("{", "[")):  # JSON: only the run's artifact
        tags[TAG_TRIGGER_REASON] = one_line(trigger_reason)
    return tags


def one_line(text: str, limit: int = MAX_TRIGGER_SUMMARY) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def outcome_of(task: str, version: str, recorded: RecordedTraining, splits: DataSplits, promoted: bool) -> TrainOutcome:
    trained, baseline, kind = recorded.trained, recorded.baseline, recorded.trained.kind
    decision = kind.decision_metric
    metrics = {
        **{name: value for name, value in kind.headline(recorded.test_metrics).items() if name != "n"},
        f"validation_{decision}": trained.best_validation[decision],
    }
    if baseline is not None:
        metrics.update(baseline.headline())
    return TrainOutcome(
        task=task,
        version=version,
        run_id=recorded.run_id,
        metrics=metrics,
        trainable_params=trained.trainable_params,
        total_params=trained.total_params,
        adapter_bytes=recorded.adapter_bytes,
        train_seconds=trained.train_seconds,
        method=trained.config.method.value,
        base=trained.base.ref.name,
        promoted=promoted,
        best_epoch=trained.best_epoch,
        steps=trained.steps,
        split_sizes=splits.sizes(),
        evaluations=recorded.evaluations,
        beats_baseline=None if baseline is None else kind.better(recorded.test_metrics[decision], baseline.test_score),
        kind=kind,
    )


def _scorer(trained: TrainedPrefix, served: AttachedPrefix | None) -> Callable[[pd.DataFrame], dict[str, Any]]:
    """How the new version is scored on a labelled frame: by `served` (the serving engine's attachment of the files
    just written), or, without one (a kind that generates), by greedy decoding of the trained adapter."""
    if served is None:
        return trained.evaluate
    kind, batch_size = trained.kind, trained.config.eval_batch_size
    return lambda frame: evaluate_served(served, kind, frame, batch_size)


def _predicted_frame(trained: TrainedPrefix, served: AttachedPrefix | None, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the kind's prediction columns of the new version (see `_scorer` for which engine predicts)."""
    kind = trained.kind
    if served is not None:
        return predictions_frame(frame, served, kind, trained.config.eval_batch_size)
    result = frame.reset_index(drop=True).copy()
    outputs = np.asarray(trained.generate(result["text"].tolist()), dtype=object)
    for column, values in kind.prediction_columns(outputs, trained.labels).items():
        result[column] = values
    return result


def _write_reference_and_splits(
    trained: TrainedPrefix,
    served: AttachedPrefix | None,
    splits: DataSplits,
    folder: Path,
    reference: pd.DataFrame | None,
) -> None:
    """The reference texts with the new version's predictions (the drift reference window), and all splits."""
    (folder / "reference").mkdir()
    (folder / "data").mkdir()
    texts = splits.validation if reference is None else reference
    window = _predicted_frame(trained, served, texts[["text", "label"]])
    window.to_parquet(folder / "reference" / REFERENCE_FILE, index=False)
    for name in ("train", "validation", "test"):
        getattr(splits, name).to_parquet(folder / "data" / f"{name}.parquet", index=False)


def describe(
    data: LabelledTexts,
    recorded: RecordedTraining,
    trigger: str,
    parent: PrefixVersion | None,
    *,
    trigger_summary: str | None = None,
    trigger_link: str | None = None,
) -> str:
    """The version's markdown description: why it exists, its lineage, its own-test score against the baseline."""
    trained, test_metrics, baseline = recorded.trained, recorded.test_metrics, recorded.baseline
    config = trained.config
    return origin_markdown(
        Origin(
            trigger=trigger,
            trigger_summary=trigger_summary,
            trigger_link=trigger_link,
            parent=parent.version if parent else None,
            warm_start=parent is not None,
            method=config.method.value,
            virtual_tokens=config.virtual_tokens,
            base=trained.base.ref.name,
            data=data.origin,
            rows=len(data),
            own_test=(
                f"{trained.kind.describe_scores(test_metrics)}; best at epoch {trained.best_epoch} "
                f"({trained.steps} steps run)"
            ),
            baseline=baseline.describe() if baseline else None,
        )
    )
