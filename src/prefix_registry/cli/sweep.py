"""`prefixctl sweep`: search method, prompt length, learning rate, initialisation and reparameterisation, and
register the best trial as a new version."""

from __future__ import annotations

from typing import Annotated

import typer

from prefix_registry.cli.app import (
    JsonOption,
    LabelColumnOption,
    LabelledDataOption,
    SampleLimitOption,
    TextColumnOption,
    train_setting,
)
from prefix_registry.cli.output import print_json, print_pairs, print_table
from prefix_registry.training.config import config_default


def sweep(
    task: Annotated[str, typer.Argument(help="Task name; the best trial becomes a new version of it.")],
    data: LabelledDataOption,
    budget_minutes: Annotated[float, typer.Option(help="Wall-clock budget of the whole sweep, in minutes.")] = 60.0,
    trials: Annotated[int, typer.Option(help="Trials in the screening rung (each method's defaults first).")] = 9,
    concurrency: Annotated[int, typer.Option(help="Trials run at once by this flow run (Prefect thread pool).")] = 1,
    methods: Annotated[str, typer.Option(help="Comma-separated methods to search.")] = "prefix,prompt,ptuning",
    text_column: TextColumnOption = "text",
    label_column: LabelColumnOption = "label",
    base: Annotated[str, train_setting("base")] = config_default("base"),
    max_length: Annotated[int, train_setting("max_length")] = config_default("max_length"),
    # The sweep reads these two its own way: epochs of a finalist (a screening rung runs fewer), and a seed that
    # also draws the trials.
    epochs: Annotated[int, typer.Option(help="Epochs of a finalist.")] = config_default("epochs"),
    limit: SampleLimitOption = None,
    seed: Annotated[int, typer.Option(help="Seed for the split and the trial draws.")] = config_default("seed"),
    as_json: JsonOption = False,
) -> None:
    """Run trials as Prefect tasks (MLflow: one parent run, a child run per trial), stop clearly losing ones after
    a screening epoch (successive halving), and register the best finalist with the sweep as its lineage."""
    from prefix_registry.flows.sweep import run_sweep
    from prefix_registry.registry.store import validate_task_name
    from prefix_registry.registry.sweeps import trial_test_key, trial_validation_key
    from prefix_registry.training.config import TrainConfig

    validate_task_name(task)
    config = TrainConfig.from_dict({"base": base, "seed": seed, "max_length": max_length, "epochs": epochs})
    result = run_sweep(
        concurrency=concurrency,
        task=task,
        data=data,
        text_column=text_column,
        label_column=label_column,
        limit=limit,
        config=config.to_dict() | {"learning_rate": None},
        n_trials=trials,
        budget_minutes=budget_minutes,
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        seed=seed,
    )
    if as_json:
        print_json(result)
        return
    kind = config.task_kind
    validation, test, metric = trial_validation_key(kind), trial_test_key(kind), kind.decision_metric
    print_table(
        f"{task}: sweep {result['sweep_run_id']}",
        [
            "trial",
            "rung",
            "method",
            "tokens",
            "lr",
            "init",
            "reparam",
            f"validation {kind.label}",
            f"test {kind.label}",
        ],
        [
            (
                t["number"],
                t["rung"],
                t["spec"]["method"],
                t["spec"]["virtual_tokens"],
                f"{t['spec']['learning_rate']:.0e}",
                t["spec"]["init"],
                t["spec"]["reparameterisation"],
                "skipped" if t["skipped"] else f"{t[validation]:.3f}",
                "" if t["skipped"] else f"{t[test]:.3f}",
            )
            for t in result["trials"]
        ],
    )
    print_pairs(
        f"{task} v{result['version']} (best trial {result['best_trial']})",
        {
            "sweep_run_id": result["sweep_run_id"],
            test: round(result["best"][test], 4),
            # The baseline's summary names its test score `probe_test_<decision metric>` (the kind's baseline).
            f"baseline_probe_{metric}": round(result["baseline"][f"probe_test_{metric}"], 4),
            "beats_baseline": result["beats_baseline"],
            "seconds": round(result["seconds"], 1),
        },
    )
