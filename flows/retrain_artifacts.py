"""Each retrain's outcome as a markdown artifact on its Prefect flow run: the scores, the why, links into MLflow.

    decided:  | set | champion v1 | challenger v2 |  + the reason, the data sizes, links to both versions
    skipped:  why no challenger was trained (cooldown, too few fresh labels), and what would start one

The artifact key is `retrain-<task>`, so Prefect's Artifacts page keeps every decision of a task as one history.
"""

from __future__ import annotations

import re
from typing import Any

from prefix_registry.healing.retraining import JUDGE_SETS, RetrainDecision, RetrainOutcome
from prefix_registry.kinds import CLASSIFICATION, TaskKind
from prefix_registry.registry import ui_links


def artifact_key(task: str) -> str:
    """`retrain-<task>` in the characters Prefect allows in a key (lowercase letters, digits, dashes)."""
    return "retrain-" + re.sub(r"[^a-z0-9-]+", "-", task.lower()).strip("-")


def version_url(ui_url: str, task: str, version: str) -> str:
    """The MLflow UI page of one registered version (in the UI's machine-learning view)."""
    return ui_links.version_url(ui_url, task, version)


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run (e.g. the monitoring run that found the drift)."""
    return ui_links.run_url(ui_url, experiment_id, run_id)


def decision_markdown(
    decision: RetrainDecision, ui_url: str, monitoring_run: str | None = None, kind: TaskKind = CLASSIFICATION
) -> str:
    """The decision as markdown: verdict, reason, judged scores side by side, data sizes and links.

    Args:
        ui_url: the MLflow UI the links point to (`Settings.resolved_mlflow_ui_url`: the configured UI address, else
            the tracking server's).
        monitoring_run: the MLflow UI address of the monitoring run that triggered the retrain, if any.
        kind: the task's kind, whose decision metric the table shows.
    """
    task, champion, challenger = decision.task, decision.champion_version, decision.challenger_version
    verdict = {RetrainOutcome.PROMOTED: "PROMOTED", RetrainOutcome.ROLLOUT_STARTED: "rollout started"}.get(
        decision.outcome, "kept the champion"
    )
    lines = [
        f"# Retrain of {task}: {verdict}",
        "",
        f"**Why:** {decision.reason}",
        "",
        f"| judged on | champion [v{champion}]({version_url(ui_url, task, champion)}) {kind.label} "
        f"| challenger [v{challenger}]({version_url(ui_url, task, str(challenger))}) {kind.label} | difference "
        "| texts |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in JUDGE_SETS:
        before = _decision_score(decision.champion_scores, name, kind)
        after = _decision_score(decision.challenger_scores, name, kind)
        difference = f"{kind.gain(after, before):+.3f}" if before is not None and after is not None else "-"
        size = (decision.challenger_scores.get(name) or {}).get("n", "-")
        lines.append(f"| {name} | {_fmt(before)} | {_fmt(after)} | {difference} | {size} |")
    lines += ["", f"Trigger: **{decision.trigger}**. Decided at {decision.decided_at}."]
    if decision.data:
        sizes = ", ".join(f"{key} {value}" for key, value in decision.data.items() if value is not None)
        lines.append(f"Data: {sizes}.")
    if decision.drift is not None:
        signals = ", ".join(decision.drift.verdict.drifted_signals) or "none"
        link = f" ([monitoring run]({monitoring_run}))" if monitoring_run else ""
        lines.append(f"Drift that started it: {signals}{link}.")
    return "\n".join(lines) + "\n"


def skip_markdown(task: str, reason: str, trigger: str, monitoring_run: str | None = None) -> str:
    """Why a retrain trained nothing; the champion keeps serving."""
    link = f"\n\nTriggered by this [monitoring run]({monitoring_run})." if monitoring_run else ""
    return (
        f"# Retrain of {task}: skipped\n\n"
        f"**Why:** {reason}\n\n"
        f"Trigger: **{trigger}**. No challenger was trained and the champion keeps serving. A later trigger (the "
        f"next drift event, or `prefixctl retrain {task}`) tries again once the cause is gone.{link}\n"
    )


def publish(markdown: str, task: str, description: str) -> None:
    """Attach `markdown` to the running flow run (and to the task's artifact history)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=artifact_key(task), description=description)


def _decision_score(scores: dict[str, Any], name: str, kind: TaskKind) -> float | None:
    """The score on `kind`'s decision metric of judge set `name`, if it was judged."""
    value = (scores.get(name) or {}).get(kind.decision_metric)
    return float(value) if value is not None else None


def _fmt(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"
