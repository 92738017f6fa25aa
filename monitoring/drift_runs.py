"""Drift verdicts kept as MLflow monitoring runs, and read back by run id.

    run_monitor -> record_verdict(report) -> monitoring run (tags, metrics, drift/verdict.json, HTML reports)
                   in the task's monitoring experiment (`prefix-registry/<task>/monitoring`)
    prefix.drift.detected event {monitoring_run_id} -> drift_episode(registry, task, run_id) -> DriftEpisode

A retrain judges the monitoring run that fired its event, not "the latest one": a clean run in between must not
change the data window it learns from.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefix_registry.errors import RegistryError
from prefix_registry.monitoring.drift import DriftReport, DriftStatus, DriftVerdict
from prefix_registry.monitoring.drift_config import DriftConfig
from prefix_registry.monitoring.verdict_text import monitoring_run_name, threshold_params, verdict_line, window_end
from prefix_registry.registry.runs import RecordedRun
from prefix_registry.registry.store import ExperimentPurpose, PrefixRegistry

MONITOR_RUN_KIND = "monitor"
MONITORING = ExperimentPurpose.MONITORING
VERSION_TAG = "prefix_registry.version"
STATUS_TAG = "prefix_registry.drift_status"
WINDOW_FROM_TAG = "prefix_registry.window_from"
WINDOW_INDEX_TAG = "prefix_registry.window_index"
VERDICT_TAG = "verdict"
CAUSED_RETRAIN_TAG = "caused_retrain_run"
VERDICT_ARTIFACT = "drift/verdict.json"


@dataclass(frozen=True)
class DriftEpisode:
    """A drift verdict as recorded in its monitoring run, with where its drift episode began.

    Attributes:
        verdict: the verdict of the monitoring run `run_id`.
        run_id: the MLflow monitoring run that holds the verdict and its reports.
        started_at: where the first current window of the episode began (consecutive drift verdicts of the same
            version, back to the last clean one), so a retrain learns from all the drifted traffic, not one window.
        windows: how many drift verdicts the episode holds.
    """

    verdict: DriftVerdict
    run_id: str
    started_at: datetime | None
    windows: int

    def brief(self) -> dict[str, Any]:
        """The few facts a retrain records and an alert shows (JSON-ready)."""
        return {
            "status": self.verdict.status.value,
            "drift_detected": self.verdict.drift_detected,
            "drifted_signals": self.verdict.drifted_signals,
            "window_sizes": self.verdict.window_sizes,
            "checked_at": self.verdict.checked_at,
            "current": self.verdict.current,
            "version": self.verdict.version,
            "drift_started_at": self.started_at.isoformat() if self.started_at else None,
            "drifted_windows": self.windows,
            "mlflow_run_id": self.run_id,
        }


def record_verdict(
    registry: PrefixRegistry, report: DriftReport, report_dir: Path, config: DriftConfig | None = None
) -> str:
    """Log one drift check as a monitoring run of its task; returns the run id.

    The run (in the task's monitoring experiment) is named by task, version, window (to the second) and verdict,
    with the window's index, which makes the name unique; it says its verdict in one line (description and tag
    `verdict`), keeps the thresholds it was judged with as params, and logs every score at step = window index (the
    task's monitoring runs counted from 0) stamped with the window's end, so MLflow's charts draw one timeline.

    The tags that say a verdict was reached (`verdict`, the note, `status` last) are set once the verdict file and
    reports are stored: a run whose artifacts could not be stored (S3 down) ends FAILED without them, so no retrain
    takes it for a judged window whose verdict it cannot read back. The next pass judges the logged window again.
    """
    verdict = report.verdict
    index = next_window_index(registry, verdict.task)
    kind = report.task_kind
    line = verdict_line(verdict, kind)
    tags = {
        VERSION_TAG: verdict.version,
        WINDOW_FROM_TAG: str(verdict.current.get("from") or ""),
        WINDOW_INDEX_TAG: str(index),
    }
    with RecordedRun(
        registry,
        verdict.task,
        run_name=monitoring_run_name(verdict, index),
        kind=MONITOR_RUN_KIND,
        tags=tags,
        purpose=MONITORING,
    ) as run:
        run.log_params(
            {
                "reference": verdict.reference.get("kind"),
                "reference_size": verdict.reference.get("size"),
                "current_size": verdict.current.get("size"),
                "version": verdict.version,
                "window_index": index,
                "window_to": verdict.current.get("to") or "",
                **(threshold_params(config) if config is not None else {}),
            }
        )
        metrics = {f"drift_{name}": signal.score for name, signal in verdict.signals.items()}
        metrics["drift_detected"] = float(verdict.drift_detected)
        # The kind's live quality (classification: live_accuracy, live_macro_f1) and how many labels it stood on.
        for key in (*kind.metric_names, "labelled"):
            if verdict.quality and verdict.quality.get(key) is not None:
                metrics[f"live_{key}"] = float(verdict.quality[key])
        end = window_end(verdict)
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
        run.log_metrics(metrics, step=index, timestamp_ms=int(end.timestamp() * 1000))
        run.log_json(verdict.to_dict(), VERDICT_ARTIFACT)
        if report.html_files:
            run.log_artifacts(report_dir, "drift")
        run.set_tags({VERDICT_TAG: line, "mlflow.note.content": line, STATUS_TAG: verdict.status})
        return run.run_id


def next_window_index(registry: PrefixRegistry, task: str) -> int:
    """The step of the task's next monitoring run: one past the latest run's (0 for the first)."""
    registry.ensure_task(task)  # the run about to be recorded creates it anyway
    latest = monitoring_runs(registry, task, max_results=1)
    if not latest:
        return 0
    previous = latest[0].data.tags.get(WINDOW_INDEX_TAG)
    return int(previous) + 1 if previous and previous.isdigit() else 0


def monitoring_runs(registry: PrefixRegistry, task: str, max_results: int = 20) -> list[Any]:
    """The task's monitoring runs (in its monitoring experiment), newest first."""
    return registry.runs(task, MONITOR_RUN_KIND, max_results=max_results, purpose=MONITORING)


def link_retrain(registry: PrefixRegistry, run_id: str, retrain: str, **facts: str) -> None:
    """Tag monitoring run `run_id` with the retrain it caused (`retrain`: e.g. the flow run's name and id).

    `facts` become tags `caused_retrain_<key>` (e.g. challenger_version, decision) once the retrain knows them.
    """
    tags = {CAUSED_RETRAIN_TAG: retrain}
    tags.update({f"{CAUSED_RETRAIN_TAG}_{key}": value for key, value in facts.items()})
    registry.set_run_tags(run_id, tags)


def read_verdict(registry: PrefixRegistry, run_id: str) -> DriftVerdict:
    """The verdict stored in monitoring run `run_id`."""
    with tempfile.TemporaryDirectory() as scratch:
        path = registry.download_run_artifacts(run_id, VERDICT_ARTIFACT, Path(scratch))
        return DriftVerdict.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def drift_episode(registry: PrefixRegistry, task: str, run_id: str, lookback: int = 50) -> DriftEpisode:
    """The drift episode that monitoring run `run_id` of `task` belongs to.

    Raises RegistryError when the run is not a monitoring run of `task` or its verdict is not drift. A run recorded
    before monitoring runs had their own experiment (in the training one) is read too.
    """
    run = registry.run(run_id)
    experiments = {registry.experiment_id(task, purpose) for purpose in ExperimentPurpose}
    if run.info.experiment_id not in experiments or run.data.tags.get("prefix_registry.kind") != MONITOR_RUN_KIND:
        raise RegistryError(f"run {run_id} is not a monitoring run of task {task!r}")
    if _status(run) is not DriftStatus.DRIFT:
        raise RegistryError(
            f"monitoring run {run_id} of {task!r} found no drift (status {run.data.tags.get(STATUS_TAG)!r})"
        )
    # Newest first: the episode is this run and the drift runs of the same version right before it.
    runs = monitoring_runs(registry, task, max_results=lookback)
    ids = [r.info.run_id for r in runs]
    earlier = runs[ids.index(run_id) :] if run_id in ids else [run]
    return _episode(registry, earlier, run_id)


def latest_drift_episode(registry: PrefixRegistry, task: str, lookback: int = 50) -> DriftEpisode | None:
    """The episode of the task's latest judged monitoring run when that run found drift, else None."""
    runs = monitoring_runs(registry, task, max_results=lookback)
    judged = [r for r in runs if _status(r) in (DriftStatus.DRIFT, DriftStatus.OK)]
    if not judged or _status(judged[0]) is not DriftStatus.DRIFT:
        return None
    return _episode(registry, judged, judged[0].info.run_id)


def _episode(registry: PrefixRegistry, newest_first: list[Any], run_id: str) -> DriftEpisode:
    """Walk back from `newest_first[0]` (the run `run_id`) over drift verdicts of the same version."""
    version = newest_first[0].data.tags.get(VERSION_TAG)
    starts = []
    for run in newest_first:
        status = _status(run)
        if status is DriftStatus.INSUFFICIENT_DATA:
            continue  # a window too small to judge neither ends nor extends the episode
        if status is not DriftStatus.DRIFT or run.data.tags.get(VERSION_TAG) != version:
            break
        if run.data.tags.get(WINDOW_FROM_TAG):
            starts.append(run.data.tags[WINDOW_FROM_TAG])
    verdict = read_verdict(registry, run_id)
    started_at = datetime.fromisoformat(min(starts)) if starts else verdict.current_from
    return DriftEpisode(verdict=verdict, run_id=run_id, started_at=started_at, windows=len(starts))


def _status(run: Any) -> DriftStatus | None:
    """The drift status a monitoring run's tag names; None for a run with no verdict yet (or an unknown one)."""
    value = run.data.tags.get(STATUS_TAG)
    return DriftStatus(value) if value in set(DriftStatus) else None
