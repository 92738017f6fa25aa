"""How a drift verdict reads in the MLflow UI: the monitoring run's name, its one-line verdict, its thresholds.

movie-sentiment v1 drift check 2026-11-29 10:00:05 → 11:00:41 UTC: drift (#3)   (run name: task, version, current
                                                    window to the second, verdict, window index: unique)
DRIFT in embedding 0.912 > 0.700; live macro-F1 0.695 on 150 labels   (description and tag `verdict`)
threshold.embedding = 0.7, method.embedding = domain_classifier, ...  (params)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefix_registry.kinds import CLASSIFICATION, TaskKind
from prefix_registry.monitoring.drift import DriftStatus, DriftVerdict, SignalResult
from prefix_registry.monitoring.drift_config import DriftConfig

VERDICT_WORDS = {
    DriftStatus.DRIFT: "drift",
    DriftStatus.OK: "no drift",
    DriftStatus.INSUFFICIENT_DATA: "not enough data",
}


def monitoring_run_name(verdict: DriftVerdict, window_index: int) -> str:
    """`<task> v<version> drift check <start> → <end> UTC: <verdict> (#<index>)`, the window to the second (the end's
    date only when it differs from the start's); the index (the task's monitoring runs counted from 0) keeps two
    checks of the same window apart."""
    start, end = _window_bounds(verdict)
    head = f"{verdict.task} v{verdict.version} drift check"
    tail = f"{VERDICT_WORDS.get(verdict.status, str(verdict.status))} (#{window_index})"
    if start is None or end is None:
        checked = _utc(datetime.fromisoformat(verdict.checked_at))
        return f"{head} {checked:%Y-%m-%d %H:%M:%S} UTC (no traffic): {tail}"
    start, end = _utc(start), _utc(end)
    end_text = f"{end:%H:%M:%S}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M:%S}"
    return f"{head} {start:%Y-%m-%d %H:%M:%S} → {end_text} UTC: {tail}"


def window_end(verdict: DriftVerdict) -> datetime:
    """When the current window's last prediction was logged (the check's time for an empty window)."""
    end = _window_bounds(verdict)[1]
    return end or datetime.fromisoformat(verdict.checked_at)


def verdict_line(verdict: DriftVerdict, kind: TaskKind = CLASSIFICATION) -> str:
    """The verdict in one line: which signals alarmed and by how much, and the live quality it saw (its metrics
    named as `kind` names them, e.g. 'live macro-F1 0.700, accuracy 0.650 on 12 labels')."""
    if verdict.status is DriftStatus.INSUFFICIENT_DATA:
        return verdict.message
    if verdict.drift_detected:
        alarms = [signal for signal in verdict.signals.values() if signal.alarm]
        head = "DRIFT in " + ", ".join(_judged(signal) for signal in alarms)
    else:
        closest = max(verdict.signals.values(), key=_share_of_threshold, default=None)
        head = "no drift" + (f" (closest: {_judged(closest)})" if closest is not None else "")
    quality = verdict.quality or {}
    if quality.get(kind.decision_metric) is not None:
        head += f"; live {kind.describe_scores(quality)} on {quality['labelled']} labels"
    elif quality.get("message"):
        head += f"; {quality['message']}"
    return head


def threshold_params(config: DriftConfig) -> dict[str, Any]:
    """Every threshold and pinned method the verdict was judged with, as run params."""
    params: dict[str, Any] = {
        "threshold.accuracy_drop": config.accuracy_drop,
        "min_window": config.min_window,
        "min_labelled": config.min_labelled,
        "max_embedding_samples": config.max_embedding_samples,
    }
    for name, signal in config.signals.items():
        params[f"threshold.{name}"] = signal.threshold
        params[f"method.{name}"] = signal.method
        params[f"alarm.{name}"] = signal.alarm
    return params


def _judged(signal: SignalResult) -> str:
    comparison = (
        (">" if signal.drifted else "<=") if signal.score_kind != "p_value" else ("<" if signal.drifted else ">=")
    )
    return f"{signal.name} {signal.score:.3f} {comparison} {signal.threshold:.3f}"


def _share_of_threshold(signal: SignalResult) -> float:
    if signal.score_kind == "p_value":
        return signal.threshold / signal.score if signal.score > 0 else float("inf")
    return signal.score / signal.threshold if signal.threshold else float("inf")


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC (a time without zone is taken as UTC, as the prediction log writes them)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _window_bounds(verdict: DriftVerdict) -> tuple[datetime | None, datetime | None]:
    start, end = verdict.current.get("from"), verdict.current.get("to")
    return (datetime.fromisoformat(start) if start else None), (datetime.fromisoformat(end) if end else None)
