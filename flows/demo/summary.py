"""What the story did: the JSON summary `prefixctl demo --json` prints, and the tables it prints for people."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from prefix_registry.flows.demo.config import DemoConfig
from prefix_registry.kinds import CLASSIFICATION
from prefix_registry.registry.store import PrefixRegistry

# The demo tells a classification story (movie-review sentiment); its figures are that kind's decision metric.
DEMO_KIND = CLASSIFICATION

# The keys of the summary's headline table, in order.
HEADLINE = (
    "champion_before",
    "champion_after",
    "drift_detected_in_window",
    "live_accuracy",
    "fresh_holdout",
    "rollback",
    "alerts_delivered",
    "seconds",
)


@dataclass
class Window:
    """One window of live traffic: where it came from, who served it, how well, and what the monitor said."""

    name: str
    source: str
    size: int
    accuracy: float
    versions: list[str]
    drift: dict[str, Any] | None = None


def build_summary(
    config: DemoConfig,
    registry: PrefixRegistry,
    windows: list[Window],
    retrains: list[dict[str, Any]],
    timeline: list[dict[str, Any]],
    champion_before: str,
    champion_after: str,
    rollback: dict[str, Any] | None,
) -> dict[str, Any]:
    """The summary of the story (JSON-ready); `champion_after` is the champion before the closing rollback."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    promoted = next((r for r in retrains if r.get("promoted")), None)

    def mean_accuracy(chosen: list[Window]) -> float | None:
        return round(float(np.mean([w.accuracy for w in chosen])), 4) if chosen else None

    clean = [w for w in windows if w.source != "IMDB"]
    under_drift = [w for w in windows if w.source == "IMDB" and w.versions == [champion_before]]
    after = [
        w for w in windows if w.source == "IMDB" and champion_after in w.versions and champion_after != champion_before
    ]
    first_drift = next((w.name for w in windows if w.drift and w.drift.get("drift_detected")), None)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200)
        flows = {flow.id: flow.name for flow in client.read_flows(limit=50)}
        # Read while the stage's flow runner still polls them: Ready, schedules on.
        deployments = client.read_deployments()
    metric = DEMO_KIND.decision_metric
    return {
        "task": config.task,
        "window_size": config.window,
        "versions": [
            {
                "version": v.version,
                "aliases": v.aliases,
                "trigger": v.trigger,
                "parent": v.parent_version,
                "metrics": {k: round(val, 4) for k, val in v.metrics.items() if k.endswith(metric)},
                "decision": v.tags.get("retrain_decision"),
            }
            for v in registry.versions(config.task)
        ],
        "champion_before": champion_before,
        "champion_after": champion_after,
        "drift_detected_in_window": first_drift,
        "windows": [
            {
                "name": w.name,
                "source": w.source,
                "size": w.size,
                "accuracy": round(w.accuracy, 4),
                "served_by": w.versions,
                "drift": w.drift,
            }
            for w in windows
        ],
        "live_accuracy": {
            "before_drift": mean_accuracy(clean),
            "under_drift": mean_accuracy(under_drift),
            "after_retraining": mean_accuracy(after),
        },
        "fresh_holdout": (
            {
                "n": promoted["champion_scores"]["fresh_holdout"]["n"],
                f"champion_{metric}": round(promoted["champion_scores"]["fresh_holdout"][metric], 4),
                f"challenger_{metric}": round(promoted["challenger_scores"]["fresh_holdout"][metric], 4),
            }
            if promoted
            else None
        ),
        "retrains": [
            {k: r.get(k) for k in ("flow_run", "state", "skipped", "promoted", "reason", "challenger_version")}
            for r in retrains
        ],
        "rollback": rollback,
        "prefect_flow_runs": [
            {
                "flow": flows.get(r.flow_id, "?"),
                "name": r.name,
                "state": r.state_type.value,
                "state_name": r.state_name,
                "from_deployment": bool(r.deployment_id),
                "tags": sorted(r.tags),
            }
            for r in runs
            if r.state_type is not None and r.state_type.value != "SCHEDULED"
        ],
        "prefect_deployments": [
            {
                "name": d.name,
                "status": d.status.value if d.status else None,
                "schedules_active": [schedule.active for schedule in d.schedules],
                "paused": d.paused,
            }
            for d in sorted(deployments, key=lambda d: d.name)
        ],
        "timeline": timeline,
    }


def window_rows(summary: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Rows of the "live traffic, window by window" table: window, texts, served by, live accuracy, monitor."""
    return [
        (
            w["name"],
            w["size"],
            "v" + "/v".join(w["served_by"]),
            f"{w['accuracy']:.3f}",
            ", ".join(w["drift"]["drifted_signals"])
            if w["drift"] and w["drift"]["drift_detected"]
            else (w["drift"] or {}).get("status", ""),
        )
        for w in summary["windows"]
    ]


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's headline facts, in the order the "summary" table shows them."""
    facts = {key: summary[key] for key in HEADLINE}
    for role, canary in (summary.get("canary") or {}).items():  # `--rollout canary`: what the judge decided
        facts[f"canary_{role}"] = (
            f"v{canary['version']}: {canary['decision']} after {canary['labels']['challenger']} + "
            f"{canary['labels']['champion']} labels (challenger + champion): {canary['reason']}"
        )
    return facts
