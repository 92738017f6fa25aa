"""`prefixctl monitor | retrain`: judge drift on logged traffic, and train a gated challenger by hand."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from prefix_registry.cli.app import AliasOption, JsonOption, VersionOption, open_registry
from prefix_registry.cli.output import print_json, print_pairs, print_table
from prefix_registry.healing.retrain_policy import policy_default, policy_help
from prefix_registry.monitoring.drift_config import DEFAULT_CURRENT_WINDOW


def monitor(
    task: Annotated[str, typer.Argument(help="Task name.")],
    current_last: Annotated[
        int | None,
        typer.Option(help=f"Current window: the N most recent predictions (default {DEFAULT_CURRENT_WINDOW})."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="Current window: predictions since this ISO time.")] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="champion-validation (the version's validation predictions) or logged (the --reference-last N "
            "predictions before the window). Default: logged with --reference-last, else champion-validation."
        ),
    ] = None,
    reference_last: Annotated[
        int | None, typer.Option(help="Reference: the N logged predictions before the current window.")
    ] = None,
    version: VersionOption = None,
    alias: AliasOption = None,
    all_versions: Annotated[bool, typer.Option(help="Include predictions of every version in the windows.")] = False,
    config: Annotated[Path | None, typer.Option(help="YAML file of drift thresholds.")] = None,
    alert: Annotated[bool, typer.Option(help="Send an alert when drift is detected.")] = True,
    fail_on_drift: Annotated[bool, typer.Option(help="Exit with status 3 when drift is detected.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Compare recent predictions with a reference window (Evidently); log the report to MLflow; alert on drift."""
    from prefix_registry.monitoring.drift_config import DriftConfig
    from prefix_registry.monitoring.monitor import MonitorRequest, run_monitor
    from prefix_registry.traffic.prediction_log import PredictionLog

    request = MonitorRequest(
        task=task,
        current_last=current_last if (current_last is not None or since is not None) else DEFAULT_CURRENT_WINDOW,
        since=_parse_time(since) if since else None,
        reference=reference,
        reference_last=reference_last,
        version=version,
        alias=alias,
        all_versions=all_versions,
    )
    registry = open_registry()
    drift_config = DriftConfig.load(config or registry.settings.drift_config)
    with PredictionLog.from_settings(registry.settings) as log:
        outcome = run_monitor(registry, log, request, drift_config, send_alerts=alert)
    verdict = outcome.verdict
    if as_json:
        print_json(outcome.summary())
    else:
        print_pairs(
            f"{task} v{verdict.version}: {verdict.status}",
            {
                "message": verdict.message,
                "reference": verdict.reference,
                "current": verdict.current,
                "mlflow_run_id": outcome.run_id,
                **outcome.html_files,
            },
        )
        if verdict.signals:
            print_table(
                "signals",
                ["signal", "group", "method", "score", "threshold", "drifted"],
                [
                    (s.name, s.group, s.method, f"{s.score:.4f}", s.threshold, _signal_state(s))
                    for s in verdict.signals.values()
                ],
            )
    if fail_on_drift and verdict.drift_detected:
        raise typer.Exit(3)


def retrain(
    task: Annotated[str, typer.Argument(help="Task name.")],
    margin: Annotated[float, typer.Option(help=policy_help("margin"))] = policy_default("margin"),
    cooldown_minutes: Annotated[float, typer.Option(help=policy_help("cooldown_minutes"))] = policy_default(
        "cooldown_minutes"
    ),
    min_fresh_labels: Annotated[int, typer.Option(help=policy_help("min_fresh_labels"))] = policy_default(
        "min_fresh_labels"
    ),
    since: Annotated[str | None, typer.Option(help="Fresh labels since this ISO time (default: drift start).")] = None,
    epochs: Annotated[int | None, typer.Option(help=policy_help("epochs"))] = policy_default("epochs"),
    promotion: Annotated[str, typer.Option(help=policy_help("promotion"))] = policy_default("promotion"),
    rollout_share: Annotated[float, typer.Option(help=policy_help("rollout_share"))] = policy_default("rollout_share"),
    monitoring_run: Annotated[
        str | None,
        typer.Option(help="Judge the drift found by this monitoring run (default: the task's latest, if it drifted)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Train a challenger on fresh feedback labels (+ replay) and promote it only if it beats the champion."""
    from prefix_registry.healing.orchestrator import retrain_and_act, triggering_drift
    from prefix_registry.healing.retrain_policy import RetrainPolicy
    from prefix_registry.traffic.prediction_log import PredictionLog

    policy = RetrainPolicy.from_values(
        {
            "margin": margin,
            "cooldown_minutes": cooldown_minutes,
            "min_fresh_labels": min_fresh_labels,
            "epochs": epochs,
            "promotion": promotion,
            "rollout_share": rollout_share,
        }
    )
    registry = open_registry()
    drift = triggering_drift(registry, task, monitoring_run)
    with PredictionLog.from_settings(registry.settings) as log:
        decision = retrain_and_act(
            registry,
            log,
            task,
            policy,
            drift=drift,
            since=_parse_time(since) if since else None,
            progress=sys.stderr.isatty(),
        )
    if as_json:
        print_json(decision.summary())
    else:
        print_pairs(
            f"{task}: {decision.verdict}",
            {
                "reason": decision.reason,
                "champion": decision.champion_scores,
                "challenger": decision.challenger_scores,
                "data": decision.data,
            },
        )


def _signal_state(signal: Any) -> str:
    """ALARM: drifted and allowed to raise the alarm; drifted: past its threshold only; else ok."""
    if signal.alarm:
        return "DRIFT"
    return "drifted (no alarm)" if signal.drifted else "ok"


def _parse_time(value: str) -> datetime:
    from prefix_registry.errors import ConfigError

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since must be an ISO time such as 2026-11-22T10:00:00Z, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
