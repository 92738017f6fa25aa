"""`prefixctl flows ...`: the Prefect deployments."""

from __future__ import annotations

from typing import Annotated

import typer

from prefix_registry.flows.schedule import schedule_default, schedule_help
from prefix_registry.healing.retrain_policy import policy_default, policy_help

flows_app = typer.Typer(help="Prefect flows: serve the deployments, or run one flow now.", no_args_is_help=True)


@flows_app.command("serve")
def flows_serve(
    monitor_every: Annotated[float, typer.Option(help=schedule_help("monitor_every_minutes"))] = schedule_default(
        "monitor_every_minutes"
    ),
    task: Annotated[list[str] | None, typer.Option("--task", help=schedule_help("tasks"))] = None,
    current_last: Annotated[int, typer.Option(help=schedule_help("current_last"))] = schedule_default("current_last"),
    judge_every: Annotated[float, typer.Option(help=schedule_help("judge_every_minutes"))] = schedule_default(
        "judge_every_minutes"
    ),
    promotion: Annotated[str, typer.Option(help=policy_help("promotion"))] = policy_default("promotion"),
    rollout_share: Annotated[float, typer.Option(help=policy_help("rollout_share"))] = policy_default("rollout_share"),
    cooldown_minutes: Annotated[float, typer.Option(help=policy_help("cooldown_minutes"))] = policy_default(
        "cooldown_minutes"
    ),
    margin: Annotated[float, typer.Option(help=policy_help("margin"))] = policy_default("margin"),
    min_fresh_labels: Annotated[int, typer.Option(help=policy_help("min_fresh_labels"))] = policy_default(
        "min_fresh_labels"
    ),
    challenger_epochs: Annotated[int | None, typer.Option(help=policy_help("epochs"))] = policy_default("epochs"),
    challenger_max_length: Annotated[int | None, typer.Option(help=policy_help("max_length"))] = policy_default(
        "max_length"
    ),
) -> None:
    """Register the train / monitor / retrain / judge-rollout deployments with the Prefect server (PREFECT_API_URL)
    and run them."""
    from prefix_registry.flows.deployments import serve_deployments
    from prefix_registry.flows.schedule import MonitorSchedule
    from prefix_registry.healing.retrain_policy import RetrainPolicy

    schedule = MonitorSchedule.from_values(
        {
            "monitor_every_minutes": monitor_every,
            "tasks": task,
            "current_last": current_last,
            "judge_every_minutes": judge_every,
        }
    )
    policy = RetrainPolicy.from_values(
        {
            "cooldown_minutes": cooldown_minutes,
            "margin": margin,
            "min_fresh_labels": min_fresh_labels,
            "epochs": challenger_epochs,
            "max_length": challenger_max_length,
            "promotion": promotion,
            "rollout_share": rollout_share,
        }
    )
    serve_deployments(schedule=schedule, retrain_policy=policy)
