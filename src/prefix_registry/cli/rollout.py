"""`prefixctl rollout start | status | judge | stop`: a challenger served beside the champion as a shadow or a
canary, judged on live feedback labels, then promoted or rolled back."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from prefix_registry.cli.app import JsonOption, open_registry
from prefix_registry.cli.output import fmt_metric, print_json, print_pairs, print_table
from prefix_registry.errors import ConfigError
from prefix_registry.healing.rollout_judge import judge_default, judge_help

rollout_app = typer.Typer(
    help="Roll a challenger out beside the champion (shadow or canary), judge it on live labels, promote or roll back.",
    no_args_is_help=True,
)

TaskArgument = Annotated[str, typer.Argument(help="Task name.")]
ReasonOption = Annotated[str | None, typer.Option(help="Why: recorded in the alias history.")]


def _judge_option(name: str) -> Any:
    return typer.Option(help=judge_help(name))


@rollout_app.command("start")
def rollout_start(
    task: TaskArgument,
    version: Annotated[str, typer.Argument(help="The challenger's version.")],
    shadow: Annotated[
        bool, typer.Option("--shadow", help="Score requests with the challenger beside the champion; never answer.")
    ] = False,
    sample: Annotated[
        float | None, typer.Option(help="With --shadow: percent of requests the challenger scores (default 100).")
    ] = None,
    canary: Annotated[
        float | None,
        typer.Option(help="Percent of requests the challenger answers, sticky per routing key (0-100)."),
    ] = None,
    reason: ReasonOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a shadow (`--shadow [--sample P]`) or canary (`--canary P`) rollout of VERSION beside the champion."""
    from prefix_registry.healing.rollout_actions import start_rollout
    from prefix_registry.registry.rollouts import RolloutMode, check_share

    if shadow == (canary is not None):
        raise ConfigError(
            "a rollout is either --shadow or --canary PERCENT: expected exactly one, got "
            f"{'both' if shadow else 'neither'}"
        )
    if sample is not None and not shadow:
        raise ConfigError(f"--sample is the share a shadow scores: expected it with --shadow, got --canary {canary}")
    mode = RolloutMode.SHADOW if shadow else RolloutMode.CANARY
    share = check_share(float(sample if shadow and sample is not None else 100.0 if shadow else canary or 0.0))
    change = start_rollout(open_registry(), task, version, mode, share, reason=reason)
    if as_json:
        print_json(change.summary())
        return
    print_pairs(f"{task}: rollout started", change.summary())


@rollout_app.command("status")
def rollout_status(task: TaskArgument, as_json: JsonOption = False) -> None:
    """Per arm: version, requests, labels, live accuracy and macro-F1 (95 % intervals), confidence, latency, errors."""
    from prefix_registry.healing.rollout_stats import stats_for
    from prefix_registry.registry.rollouts import RolloutError
    from prefix_registry.traffic.prediction_log import PredictionLog

    registry = open_registry()
    rollout = registry.rollouts.current(task)
    if rollout is None:
        raise RolloutError(f"task {task!r} has no rollout running")
    with PredictionLog.from_settings(registry.settings) as log:
        stats = stats_for(registry, log, rollout)
    if as_json:
        print_json(stats.summary())
        return
    print_pairs(f"{task}: {rollout.mode} rollout", rollout.summary())
    arms = [("champion", stats.champion), ("challenger", stats.challenger)]
    print_table(
        f"{task}: arms",
        ["arm", "version", "requests", "labelled", "accuracy", "macro-F1", "confidence", "p50 ms", "p99 ms", "errors"],
        [
            (
                name,
                arm.version,
                arm.requests,
                arm.labelled,
                _with_interval(arm.accuracy, arm.accuracy_ci),
                _with_interval(arm.macro_f1, arm.macro_f1_ci),
                fmt_metric(arm.mean_confidence),
                fmt_metric(arm.latency_p50_ms),
                fmt_metric(arm.latency_p99_ms),
                f"{arm.errors} ({arm.error_rate:.1%})",
            )
            for name, arm in arms
        ],
    )
    if stats.agreement is not None:
        print(f"agreement on the same texts: {stats.agreement:.1%} of {stats.compared}")


@rollout_app.command("judge")
def rollout_judge(
    task: TaskArgument,
    min_labels: Annotated[int, _judge_option("min_labels")] = judge_default("min_labels"),
    max_labels: Annotated[int, _judge_option("max_labels")] = judge_default("max_labels"),
    z: Annotated[float, _judge_option("z")] = judge_default("z"),
    max_loss: Annotated[float, _judge_option("max_loss")] = judge_default("max_loss"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the decision; move nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Judge the running rollout on live labels; promote the challenger, roll it back, or continue."""
    from prefix_registry.config_values import from_values
    from prefix_registry.healing.rollout_actions import judge_rollout
    from prefix_registry.healing.rollout_judge import JudgePolicy
    from prefix_registry.traffic.prediction_log import PredictionLog

    policy = from_values(
        JudgePolicy,
        {"min_labels": min_labels, "max_labels": max_labels, "z": z, "max_loss": max_loss},
        "rollout judge",
    )
    registry = open_registry()
    with PredictionLog.from_settings(registry.settings) as log:
        judgement = judge_rollout(registry, log, task, policy, act=not dry_run)
    if as_json:
        print_json(judgement.summary())
        return
    print_pairs(
        f"{task}: rollout judged",
        {
            "decision": judgement.decision.verdict.value,
            "reason": judgement.decision.reason,
            "acted": judgement.change.action.value if judgement.change else "nothing moved",
        },
    )


@rollout_app.command("stop")
def rollout_stop(task: TaskArgument, reason: ReasonOption = None, as_json: JsonOption = False) -> None:
    """End the rollout by hand: the champion answers all traffic again."""
    from prefix_registry.healing.rollout_actions import stop_rollout

    change = stop_rollout(open_registry(), task, reason)
    if as_json:
        print_json(change.summary())
        return
    print_pairs(f"{task}: rollout stopped", change.summary())


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"
