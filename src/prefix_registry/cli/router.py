"""`prefixctl router train | promote | versions`: a task's regime router, fitted on the frozen base's sentence
embeddings, versioned and promoted like a prefix (registry/routers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefix_registry.cli.app import JsonOption, TextColumnOption, open_registry
from prefix_registry.cli.output import fmt_metric, print_json, print_pairs, print_table

router_app = typer.Typer(
    help="A task's regime router: which regime's prefix reads each text.",
    no_args_is_help=True,
)

TaskArgument = Annotated[str, typer.Argument(help="Task name (a task with regimes).")]


@router_app.command("train")
def router_train(
    task: TaskArgument,
    data: Annotated[str, typer.Option("--data", "-d", help="CSV/JSONL/Parquet file: a text and its regime per row.")],
    regime_column: Annotated[str, typer.Option(help="Column holding each text's regime.")],
    text_column: TextColumnOption = "text",
    base: Annotated[
        str | None, typer.Option(help="Base whose embeddings it reads (default: the first regime champion's).")
    ] = None,
    max_length: Annotated[int, typer.Option(help="Texts are truncated to this many tokens.")] = 128,
    threshold: Annotated[
        float, typer.Option(help="Below this confidence (0-1) the fallback regime answers instead.")
    ] = 0.5,
    fallback: Annotated[
        str | None, typer.Option(help="Regime that answers below the threshold (default: the most frequent).")
    ] = None,
    holdout: Annotated[float, typer.Option(help="Share of rows held out to measure its accuracy.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Random seed of the split and the fit.")] = 0,
    features: Annotated[
        str,
        typer.Option(
            help="What it reads of a text: 'static' (the mean of the base's input token embeddings: no forward "
            "pass), 'contextual' (the base's mean-pooled states: one forward pass per routed text), or 'auto' (fit "
            "both on the same split, keep static unless it loses more than 1 point of held-out accuracy)."
        ),
    ] = "auto",
    promote: Annotated[bool, typer.Option("--promote", help="Make the new router version the champion.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Fit TASK's router on labelled regimes, report its held-out accuracy, and register it as a new version."""
    from prefix_registry.errors import ConfigError
    from prefix_registry.inference.router import RouterFeatures
    from prefix_registry.registry.routers import train_router
    from prefix_registry.registry.store import validate_task_name
    from prefix_registry.training.data import read_table

    validate_task_name(task)
    if not 0.0 < holdout < 1.0:
        raise ConfigError(f"--holdout must be between 0 and 1 (exclusive), got {holdout}")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be within [0, 1], got {threshold}")
    choices = ["auto", *(kind.value for kind in RouterFeatures)]
    if features not in choices:
        raise ConfigError(f"--features must be one of {', '.join(choices)}, got {features!r}")
    frame = read_table(Path(data))
    outcome = train_router(
        open_registry(),
        task,
        frame,
        text_column,
        regime_column,
        base=base,
        max_length=max_length,
        threshold=threshold,
        fallback=fallback,
        holdout=holdout,
        seed=seed,
        promote=promote,
        features=None if features == "auto" else RouterFeatures(features),
    )
    if as_json:
        print_json(outcome.summary())
    else:
        print_pairs(f"{task} router v{outcome.version.version}", outcome.summary())


@router_app.command("promote")
def router_promote(
    task: TaskArgument,
    version: Annotated[str, typer.Argument(help="Router version to make the champion.")],
    as_json: JsonOption = False,
) -> None:
    """Point the router's champion at VERSION."""
    from prefix_registry.registry.routers import promote_router

    promote_router(open_registry(), task, version)
    summary = {"task": task, "router_champion": version}
    if as_json:
        print_json(summary)
    else:
        print_pairs(f"{task}: router champion", summary)


@router_app.command("versions")
def router_versions_command(task: TaskArgument, as_json: JsonOption = False) -> None:
    """List the versions of TASK's router: aliases, held-out accuracy, regimes, parent."""
    from prefix_registry.registry.routers import router_versions

    found = router_versions(open_registry(), task)
    if as_json:
        print_json([v.summary() for v in found])
        return
    print_table(
        f"{task}: {len(found)} router version(s)",
        ["version", "aliases", "held-out acc", "regimes", "parent"],
        [
            (v.version, ",".join(v.aliases), fmt_metric(v.accuracy), ",".join(v.regimes), v.parent_version or "")
            for v in found
        ],
    )


@router_app.command("mix")
def router_mix(
    task: TaskArgument,
    hours: Annotated[float, typer.Option(help="Window length: the last HOURS against the HOURS before them.")] = 24.0,
    max_distance: Annotated[
        float, typer.Option(help="Total variation between the two mixes above which the mix has shifted.")
    ] = 0.2,
    as_json: JsonOption = False,
) -> None:
    """Judge the regime mix of TASK's traffic: the regimes' shares now against before (a shift is not drift)."""
    from datetime import UTC, datetime, timedelta

    from prefix_registry.errors import ConfigError
    from prefix_registry.monitoring.regime_mix import judge_regime_mix, regime_counts
    from prefix_registry.registry.regimes import regimes_of
    from prefix_registry.traffic.prediction_log import PredictionLog

    registry = open_registry()
    regimes = regimes_of(registry, task)
    if not regimes:
        raise ConfigError(f"task {task!r} has no regimes; expected a task trained with --regime")
    if hours <= 0:
        raise ConfigError(f"--hours must be positive, got {hours}")
    now = datetime.now(UTC)
    window = timedelta(hours=hours)
    with PredictionLog.from_settings(registry.settings) as log:
        reference = regime_counts(log, task, regimes, now - 2 * window, now - window)
        current = regime_counts(log, task, regimes, now - window, now)
    verdict = judge_regime_mix(task, reference, current, max_distance=max_distance)
    if as_json:
        print_json(verdict.summary())
    else:
        print_pairs(f"{task}: regime mix", {"status": verdict.status.value, "summary": verdict.describe()})
