"""`prefixctl train`: train an adapter on labelled text and register it as a new version.

The training options are TrainConfig's fields: their help text and default come from the field itself
(training/config.py), so a setting is described in one place. TrainConfig fields without an option here keep their
default.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from prefix_registry.cli.app import (
    JsonOption,
    LabelColumnOption,
    LabelledDataOption,
    SampleLimitOption,
    TextColumnOption,
    open_registry,
    train_setting,
)
from prefix_registry.cli.output import print_json, print_pairs
from prefix_registry.training.config import config_default


def train(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name; the registered model is named after it.")],
    data: LabelledDataOption,
    regime: Annotated[
        str | None,
        typer.Option(help="Register the version in this regime of the task (its own versions, champion, lineage)."),
    ] = None,
    text_column: TextColumnOption = "text",
    label_column: LabelColumnOption = "label",
    kind: Annotated[str, train_setting("kind")] = config_default("kind"),
    input_column: Annotated[
        str | None, typer.Option(help="Generation: the column holding the input (default: --text-column's).")
    ] = None,
    target_column: Annotated[
        str | None, typer.Option(help="Generation: the column holding the target text (default: --label-column's).")
    ] = None,
    instruction: Annotated[str, train_setting("instruction")] = config_default("instruction"),
    max_new_tokens: Annotated[int, train_setting("max_new_tokens")] = config_default("max_new_tokens"),
    method: Annotated[str, train_setting("method")] = config_default("method"),
    base: Annotated[str, train_setting("base")] = config_default("base"),
    virtual_tokens: Annotated[int, train_setting("virtual_tokens")] = config_default("virtual_tokens"),
    prompt_init: Annotated[str, train_setting("prompt_init")] = config_default("prompt_init"),
    init_text: Annotated[str, train_setting("init_text")] = config_default("init_text"),
    epochs: Annotated[int, train_setting("epochs")] = config_default("epochs"),
    max_minutes: Annotated[float, train_setting("max_minutes")] = config_default("max_minutes"),
    max_steps: Annotated[int | None, train_setting("max_steps")] = config_default("max_steps"),
    learning_rate: Annotated[float | None, train_setting("learning_rate")] = config_default("learning_rate"),
    batch_size: Annotated[int, train_setting("batch_size")] = config_default("batch_size"),
    max_length: Annotated[int, train_setting("max_length")] = config_default("max_length"),
    patience: Annotated[int, train_setting("patience")] = config_default("patience"),
    class_weighting: Annotated[str, train_setting("class_weighting")] = config_default("class_weighting"),
    head_init: Annotated[str, train_setting("head_init")] = config_default("head_init"),
    prefix_projection: Annotated[
        bool, train_setting("prefix_projection", "--prefix-projection/--no-prefix-projection")
    ] = config_default("prefix_projection"),
    seed: Annotated[int, train_setting("seed")] = config_default("seed"),
    precision: Annotated[str, train_setting("precision")] = config_default("precision"),
    limit: SampleLimitOption = None,
    parent: Annotated[str | None, typer.Option(help="Warm-start from this version's checkpoint.")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="Make the new version the champion.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="With --promote: promote even below the baseline (needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why it is promoted; kept in the alias history.")] = None,
    alias: Annotated[str | None, typer.Option(help="Also point this alias (e.g. challenger) at it.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Train an adapter on labelled text and register it as a new version of TASK (or of its --regime)."""
    from prefix_registry.errors import ConfigError
    from prefix_registry.registry.loading import load_warm_start
    from prefix_registry.registry.regimes import ensure_regime, validate_regime_name
    from prefix_registry.registry.store import validate_task_name
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import load_labelled_texts, load_pairs

    validate_task_name(task)
    if regime is not None:
        validate_regime_name(regime)
    if force and not promote:
        raise ConfigError(f"--force applies to --promote; got --force without --promote for task {task!r}")
    # from_dict: options arrive as typed strings (a method, an initialisation...); TrainConfig turns each into its
    # enum, or refuses it in one line naming the choices.
    config = TrainConfig.from_dict(
        {
            "kind": kind,
            "instruction": instruction,
            "max_new_tokens": max_new_tokens,
            "method": method,
            "base": base,
            "virtual_tokens": virtual_tokens,
            "prompt_init": prompt_init,
            "init_text": init_text,
            "epochs": epochs,
            "max_minutes": max_minutes,
            "max_steps": max_steps,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "max_length": max_length,
            "patience": patience,
            "class_weighting": class_weighting,
            "head_init": head_init,
            "prefix_projection": prefix_projection,
            "seed": seed,
            "precision": precision,
        }
    )
    if config.task_kind.generates:
        labelled = load_pairs(data, input_column or text_column, target_column or label_column, limit, config.seed)
    elif input_column or target_column:
        raise ConfigError(
            f"--input-column/--target-column apply to generation tasks; task kind {config.kind!r} reads "
            "--text-column/--label-column"
        )
    else:
        labelled = load_labelled_texts(data, text_column, label_column, limit=limit, seed=config.seed)
    registry = open_registry()
    # A regime is a task of its own in the registry (registry/regimes.py): TASK.REGIME, tagged with its task.
    target = task if regime is None else ensure_regime(registry, task, regime)
    parent_version, warm_start = None, None
    if parent is not None:
        parent_version = registry.version(target, parent)
        warm_start = load_warm_start(registry, parent_version)
    outcome = train_and_register(
        registry,
        target,
        labelled,
        config,
        promote=promote,
        force=force,
        reason=reason,
        alias=alias,
        parent=parent_version,
        warm_start=warm_start,
        progress=progress and sys.stderr.isatty(),
    )
    summary = outcome.summary()
    if regime is not None:
        summary = {**summary, "task": task, "regime": regime, "model": target}
    if as_json:
        print_json(summary)
        return
    summary["metrics"] = {k: round(v, 4) for k, v in outcome.metrics.items()}
    print_pairs(f"{task} regime {regime} v{outcome.version}" if regime else f"{task} v{outcome.version}", summary)
