"""`prefixctl flows ...`: the Prefect deployments."""

from __future__ import annotations

from typing import Annotated

import typer

from prefix_registry.cli.app import app

flows_app = typer.Typer(help="Prefect flows: serve the deployments, or run one flow now.", no_args_is_help=True)

app.add_typer(flows_app, name="flows")


@flows_app.command("serve")
def flows_serve(
    monitor_every: Annotated[float, typer.Option(help="Minutes between monitoring runs.")] = 10.0,
    task: Annotated[list[str] | None, typer.Option("--task", help="Monitor only these tasks.")] = None,
    current_last: Annotated[int, typer.Option(help="Predictions in each monitoring window.")] = 500,
    cooldown_minutes: Annotated[float, typer.Option(help="Minimum minutes between retrains of a task.")] = 60.0,
    margin: Annotated[float, typer.Option(help="Macro-F1 a challenger must gain to be promoted.")] = 0.01,
    min_fresh_labels: Annotated[int, typer.Option(help="Fresh feedback labels a retrain needs.")] = 100,
    challenger_epochs: Annotated[int | None, typer.Option(help="Epochs of a challenger.")] = None,
    challenger_max_length: Annotated[int | None, typer.Option(help="Max tokens of a challenger.")] = None,
) -> None:
    """Register the train / monitor / retrain deployments with the Prefect server (PREFECT_API_URL) and run them."""
    from prefix_registry.flows.deployments import serve_deployments

    policy: dict[str, float | int] = {
        "cooldown_minutes": cooldown_minutes,
        "margin": margin,
        "min_fresh_labels": min_fresh_labels,
    }
    if challenger_epochs is not None:
        policy["epochs"] = challenger_epochs
    if challenger_max_length is not None:
        policy["max_length"] = challenger_max_length
    serve_deployments(monitor_every_minutes=monitor_every, tasks=task, current_last=current_last, retrain_policy=policy)
