"""The alert of a drift verdict: the signals that raised the alarm, every signal's score, the window sizes."""

from __future__ import annotations

from prefix_registry.alerts.model import Alert
from prefix_registry.monitoring.drift import DriftVerdict


def drift_alert(verdict: DriftVerdict, monitoring_run_id: str | None = None) -> Alert:
    """A "drift_detected" warning: the signals that raised the alarm, every signal's score, the window sizes."""
    signals = {
        name: {
            "score": signal.score,
            "threshold": signal.threshold,
            "drifted": signal.drifted,
            "alarm": signal.alarm,
            "method": signal.method,
        }
        for name, signal in verdict.signals.items()
    }
    alarms = verdict.drifted_signals
    if alarms:
        what = f"{len(alarms)} of {len(signals)} signal(s) drifted: {', '.join(alarms)}"
    else:
        what = "drift detected" if verdict.drift_detected else "no signal over its threshold"
    details = {
        "version": verdict.version,
        "drift_detected": verdict.drift_detected,
        "drifted_signals": alarms,
        "current_size": verdict.current.get("size"),
        "reference_size": verdict.reference.get("size"),
        "signals": signals,
        "monitoring_run_id": monitoring_run_id,
    }
    title = f"{verdict.task} v{verdict.version}: {what}"
    return Alert(kind="drift_detected", task=verdict.task, title=title, details=details, severity="warning")
