"""One monitoring pass for a task: windows -> drift verdict -> Evidently reports in MLflow -> alert on drift."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from prefix_registry.errors import ConfigError
from prefix_registry.monitoring.alerts import drift_alert, send_alert
from prefix_registry.monitoring.drift import DriftReport, DriftVerdict, DriftWindow, detect_drift
from prefix_registry.monitoring.drift_config import DriftConfig
from prefix_registry.monitoring.prediction_log import PredictionLog
from prefix_registry.monitoring.text_features import OovRate, sentence_embeddings
from prefix_registry.registry.loading import load_reference_frame
from prefix_registry.registry.runs import RecordedRun
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.versions import PrefixVersion
from prefix_registry.training.base_models import load_base_encoder, resolve_base

logger = logging.getLogger(__name__)

CHAMPION_VALIDATION = "champion-validation"
WINDOW_FROM_TAG = "prefix_registry.window_from"


@dataclass
class MonitorRequest:
    """Which windows to compare.

    Attributes:
        current_last: the current window is the task's most recent N logged predictions...
        since: ...or those logged since this time (both may be combined).
        reference_last: compare with the N logged predictions before the current window, instead of the
            serving version's validation predictions (kept with it at training time).
        version / alias: the version judged (default: the one behind `champion`); its predictions form the
            current window unless `all_versions`.
    """

    task: str
    current_last: int | None = 500
    since: datetime | None = None
    reference_last: int | None = None
    version: str | None = None
    alias: str | None = None
    all_versions: bool = False


@dataclass
class MonitorOutcome:
    verdict: DriftVerdict
    run_id: str | None = None
    report_dir: Path | None = None
    html_files: dict[str, str] = field(default_factory=dict)
    alert: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {**self.verdict.to_dict(), "mlflow_run_id": self.run_id, "reports": self.html_files, "alert": self.alert}


@lru_cache(maxsize=4)
def _text_models(base_name: str, cache_dir: str) -> tuple[Any, OovRate]:
    model, tokenizer = load_base_encoder(resolve_base(base_name, Path(cache_dir)))
    return (model, tokenizer), OovRate(tokenizer)


def current_window(log: PredictionLog, request: MonitorRequest, version: PrefixVersion) -> DriftWindow:
    if request.current_last is None and request.since is None:
        raise ConfigError("choose the current window with --current-last N and/or --since TIME")
    frame = log.window(
        request.task,
        last_n=request.current_last,
        since=request.since,
        version=None if request.all_versions else version.version,
    )
    details: dict[str, Any] = {"versions": sorted(frame["version"].unique().tolist()) if len(frame) else []}
    if len(frame):
        details["from"] = frame["created_at"].min().isoformat()
        details["to"] = frame["created_at"].max().isoformat()
    return DriftWindow(_log_rows(frame), kind="recent predictions", details=details)


def reference_window(
    registry: PrefixRegistry, log: PredictionLog, request: MonitorRequest, version: PrefixVersion, current: DriftWindow
) -> DriftWindow:
    if request.reference_last is None:
        frame = load_reference_frame(registry, version)
        rows = pd.DataFrame(
            {
                "text": frame["text"],
                "predicted_label": frame["predicted"],
                "confidence": frame["confidence"],
                "true_label": frame["label"],
            }
        )
        return DriftWindow(rows, kind=CHAMPION_VALIDATION, details={"version": version.version})
    until = datetime.fromisoformat(current.details["from"]) if current.details.get("from") else None
    frame = log.window(
        request.task,
        last_n=request.reference_last,
        until=until,
        version=None if request.all_versions else version.version,
    )
    return DriftWindow(_log_rows(frame), kind=f"{request.reference_last} logged predictions before the window")


def run_monitor(
    registry: PrefixRegistry,
    log: PredictionLog,
    request: MonitorRequest,
    config: DriftConfig | None = None,
    send_alerts: bool = True,
    record: bool = True,
) -> MonitorOutcome:
    """Check one task's recent traffic for drift; log the reports to MLflow and alert when drift is found."""
    config = config or DriftConfig.load(registry.settings.drift_config)
    version = registry.resolve(request.task, request.version, request.alias)
    log.flush(timeout=30)
    current = current_window(log, request, version)
    reference = reference_window(registry, log, request, version, current)
    (model, tokenizer), oov_rate = _text_models(version.base, str(registry.settings.resolved_cache_dir))

    def embed(texts: list[str]) -> Any:
        return sentence_embeddings(model, tokenizer, texts)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    report_dir = registry.settings.home / "reports" / request.task / stamp
    report: DriftReport = detect_drift(
        request.task, version.version, reference, current, config, oov_rate, embed, html_dir=report_dir
    )
    outcome = MonitorOutcome(
        verdict=report.verdict,
        report_dir=report_dir,
        html_files={name: str(path) for name, path in report.html_files.items()},
    )
    if record:
        outcome.run_id = _record(registry, report, report_dir)
    if send_alerts and report.verdict.drift_detected:
        delivery = send_alert(
            drift_alert(request.task, version.version, report.verdict.to_dict()), settings=registry.settings
        )
        outcome.alert = (
            delivery.to_dict() if delivery is not None else {"sent": False, "reason": "no webhooks configured"}
        )
    return outcome


def _record(registry: PrefixRegistry, report: DriftReport, report_dir: Path) -> str:
    verdict = report.verdict
    tags = {
        "prefix_registry.version": verdict.version,
        "prefix_registry.drift_status": verdict.status,
        WINDOW_FROM_TAG: str(verdict.current.get("from") or ""),
    }
    with RecordedRun(registry, verdict.task, run_name=f"monitor-v{verdict.version}", kind="monitor", tags=tags) as run:
        run.log_params(
            {
                "reference": verdict.reference.get("kind"),
                "reference_size": verdict.reference.get("size"),
                "current_size": verdict.current.get("size"),
                "version": verdict.version,
            }
        )
        metrics = {f"drift_{name}": signal.score for name, signal in verdict.signals.items()}
        metrics["drift_detected"] = float(verdict.drift_detected)
        for key in ("accuracy", "macro_f1", "labelled"):
            if verdict.quality and verdict.quality.get(key) is not None:
                metrics[f"live_{key}"] = float(verdict.quality[key])
        run.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "verdict.json").write_text(json.dumps(verdict.to_dict(), indent=2, default=str))
            run.log_artifacts(Path(scratch), "drift")
        if report.html_files:
            run.log_artifacts(report_dir, "drift")
        return run.run_id


def _log_rows(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=["text", "predicted_label", "confidence", "true_label"])
    return pd.DataFrame(
        {
            "text": frame["text"],
            "predicted_label": frame["predicted_label"],
            "confidence": frame["confidence"],
            "true_label": frame["feedback_label"],
        }
    )


def latest_drift_verdict(registry: PrefixRegistry, task: str, lookback: int = 50) -> dict[str, Any] | None:
    """The verdict of the task's latest monitoring run if it detected drift, else None.

    Adds `drift_started_at`: where the first window of this drift episode began (consecutive drift verdicts of the
    same version, back to the last clean one), so a retrain learns from all the drifted traffic, not one window.
    """
    runs = registry.runs(task, "monitor", max_results=lookback)
    judged = [run for run in runs if run.data.tags.get("prefix_registry.drift_status") in ("drift", "ok")]
    if not judged or judged[0].data.tags.get("prefix_registry.drift_status") != "drift":
        return None
    latest = judged[0]
    version = latest.data.tags.get("prefix_registry.version")
    starts = []
    for run in judged:
        if (
            run.data.tags.get("prefix_registry.drift_status") != "drift"
            or run.data.tags.get("prefix_registry.version") != version
        ):
            break
        if run.data.tags.get(WINDOW_FROM_TAG):
            starts.append(run.data.tags[WINDOW_FROM_TAG])
    with tempfile.TemporaryDirectory() as scratch:
        folder = registry.download_run_artifacts(latest.info.run_id, "drift/verdict.json", Path(scratch))
        verdict = json.loads(Path(folder).read_text(encoding="utf-8"))
    verdict["mlflow_run_id"] = latest.info.run_id
    verdict["drift_started_at"] = min(starts) if starts else verdict.get("current", {}).get("from")
    verdict["drifted_windows"] = len(starts)
    return verdict
