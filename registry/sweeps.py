"""A sweep in MLflow: one parent run, one child run per trial (params + metrics, for the compare and
parallel-coordinates views), and the best trial registered as a version whose tags name the sweep.

Trials run wherever the caller puts them (flows/sweep.py: Prefect tasks); this module only trains and records.

    sweep parent run --run_trial (xN, rung 0: screening budget)--> results --survivors--> run_trial (full budget)
        --register_best--> PrefixVersion tagged sweep_run_id / sweep_trial
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from prefix_registry.errors import RegistryError
from prefix_registry.kinds import CLASSIFICATION, Baseline, TaskKind
from prefix_registry.registry.eval_sets import OWN_TEST, REFERENCE_TEST
from prefix_registry.registry.runs import RecordedRun
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import (
    RegisteredScores,
    describe,
    label_registered_run,
    train_in_run,
    version_tags,
)
from prefix_registry.registry.versions import TAG_TRIGGER, PrefixVersion, hidden_tag
from prefix_registry.training.base_models import load_base_for_classification, resolve_base
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.data import LabelledTexts
from prefix_registry.training.search import TrialSpec
from prefix_registry.training.splits import DataSplits

TAG_SWEEP_RUN = hidden_tag("sweep_run_id")
TAG_SWEEP_TRIAL = hidden_tag("sweep_trial")
MLFLOW_PARENT_TAG = "mlflow.parentRunId"  # what makes MLflow's UI nest a run under another
SWEEP_TRIGGER = "sweep"


def trial_validation_key(kind: TaskKind) -> str:
    """A trial summary's key of its best validation score on the kind's decision metric (`validation_macro_f1`)."""
    return f"validation_{kind.decision_metric}"


def trial_test_key(kind: TaskKind) -> str:
    """A trial summary's key of its test score on the kind's decision metric (`test_macro_f1`)."""
    return f"test_{kind.decision_metric}"


@dataclass(frozen=True)
class TrialBudget:
    """How long one trial may train: its rung's epochs, its share of the minutes, and the sweep's deadline."""

    rung: int
    epochs: int
    max_minutes: float
    deadline: float  # time.time() after which a trial that has not started is skipped


def run_trial(
    registry: PrefixRegistry,
    task: str,
    data: LabelledTexts,
    splits: DataSplits,
    spec: TrialSpec,
    base_config: TrainConfig,
    sweep_run_id: str,
    budget: TrialBudget,
    baseline: Baseline | None,
) -> dict[str, Any]:
    """Train one trial in a child run of the sweep; returns a plain summary (JSON-ready, so any worker can send it)."""
    summary: dict[str, Any] = {"number": spec.number, "rung": budget.rung, "spec": asdict(spec)}
    kind = base_config.task_kind
    if time.time() > budget.deadline:
        return {**summary, "skipped": True, trial_validation_key(kind): None}
    config = spec.config(base_config).replace(epochs=budget.epochs, max_minutes=budget.max_minutes)
    base = load_base_for_classification(
        resolve_base(config.base, registry.settings.resolved_cache_dir), splits.labels, seed=config.seed, kind=kind
    )
    tags = {MLFLOW_PARENT_TAG: sweep_run_id, TAG_SWEEP_RUN: sweep_run_id, TAG_TRIGGER: SWEEP_TRIGGER}
    with RecordedRun(registry, task, f"trial-{spec.number}-rung-{budget.rung}", kind="sweep-trial", tags=tags) as run:
        run.log_params({**spec.params(), "rung": budget.rung})
        recorded = train_in_run(
            run, base, data, splits, config, trigger=SWEEP_TRIGGER, baseline=baseline, measure=False, progress=False
        )
    trained = recorded.trained
    return {
        **summary,
        "skipped": False,
        "run_id": recorded.run_id,
        "artifact_uri": recorded.artifact_uri,
        trial_validation_key(kind): trained.best_validation[kind.decision_metric],
        trial_test_key(kind): recorded.test_metrics[kind.decision_metric],
        "train_seconds": trained.train_seconds,
        "steps": trained.steps,
        "stop_reason": trained.stop_reason,
        "config": config.to_dict(),
        "tags": version_tags(data, recorded, trigger=SWEEP_TRIGGER),
        "description": describe(data, recorded, SWEEP_TRIGGER, None),
        # Logged on the trial's run only if it is registered: the set names need the version (eval_sets.py).
        "scores": asdict(RegisteredScores.of(recorded)),
    }


def best_trial(results: list[dict[str, Any]], kind: TaskKind = CLASSIFICATION) -> dict[str, Any]:
    """The trial with the best validation score on `kind`'s decision metric (never test: that one judges the
    version); ties: lowest number."""
    finished = sorted((r for r in results if not r.get("skipped")), key=lambda r: r["number"])
    if not finished:
        raise RegistryError("the sweep finished no trial within its budget; expected at least one (raise the budget)")
    key = trial_validation_key(kind)
    best = finished[0]
    for result in finished[1:]:
        if kind.better(result[key], best[key]):
            best = result
    return best


def register_best(
    registry: PrefixRegistry,
    task: str,
    results: list[dict[str, Any]],
    sweep_run_id: str,
    splits: DataSplits,
    kind: TaskKind = CLASSIFICATION,
) -> tuple[PrefixVersion, dict[str, Any]]:
    """Register the best trial's run (ranked by `kind`'s decision metric) as a version of `task`, its lineage naming
    the sweep run and the trial; the trial's run is named after the version and lists the test split (every trial's)
    as its MLflow dataset."""
    best = best_trial(results, kind)
    tags = {**best["tags"], TAG_SWEEP_RUN: sweep_run_id, TAG_SWEEP_TRIAL: str(best["number"])}
    description = f"{best['description']} Best of sweep run {sweep_run_id} (trial {best['number']})."
    version = registry.register_version(task, best["run_id"], best["artifact_uri"], tags, description)
    registry.gateway.set_run_tags(sweep_run_id, {"prefix_registry.version": version.version})
    # Trials train from scratch on the sweep's split: like a first version, their test split is also the reference.
    frames = {OWN_TEST: splits.test, REFERENCE_TEST: splits.test}
    what = f"{best['config']['method']} (sweep trial {best['number']})"
    scores = RegisteredScores(**best["scores"])
    return label_registered_run(registry, version, what, best["run_id"], frames, None, scores), best
