"""One monitoring pass for a task: windows -> drift verdict -> Evidently reports in MLflow -> alert on drift."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from prefix_registry.alerts import send_alert
from prefix_registry.errors import ConfigError
from prefix_registry.monitoring.drift import DriftReport, DriftVerdict, DriftWindow, detect_drift
from prefix_registry.monitoring.drift_alert import drift_alert
from prefix_registry.monitoring.drift_config import DEFAULT_CURRENT_WINDOW, DriftConfig
from prefix_registry.monitoring.drift_runs import record_verdict
from prefix_registry.monitoring.text_features import OovRate, sentence_embeddings
from prefix_registry.registry.loading import load_reference_frame
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.versions import PrefixVersion
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.training.base_models import load_base_encoder, resolve_base

logger = logging.getLogger(__name__)

# The two kinds of reference window (`prefixctl monitor --reference`).
CHAMPION_VALIDATION = "champion-validation"
LOGGED = "logged"
REFERENCE_KINDS = (CHAMPION_VALIDATION, LOGGED)


@dataclass
class MonitorRequest:
    """Which windows to compare.

    Attributes:
        current_last: the current window is the task's most recent N logged predictions...
        since: ...or those logged since this time (both may be combined).
        reference: `champion-validation` (the judged version's validation texts and predictions, kept with it at
            training time) or `logged` (the `reference_last` logged predictions before the current window).
            Default: `logged` when `reference_last` is given, else `champion-validation`.
        reference_last: size of a `logged` reference window.
        version / alias: the version judged (default: the one behind `champion`); its predictions form the
            current window unless `all_versions`.
    """

    task: str
    current_last: int | None = DEFAULT_CURRENT_WINDOW
    since: datetime | None = None
    reference_last: int | None = None
    version: str | None = None
    alias: str | None = None
    all_versions: bool = False
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.reference is None:
            self.reference = LOGGED if self.reference_last is not None else CHAMPION_VALIDATION
        if self.reference not in REFERENCE_KINDS:
            raise ConfigError(f"--reference must be {' or '.join(REFERENCE_KINDS)}, got {self.reference!r}")
        if self.reference == LOGGED and self.reference_last is None:
            raise ConfigError("--reference logged needs --reference-last N")
        if self.reference == CHAMPION_VALIDATION and self.reference_last is not None:
            raise ConfigError(f"--reference-last compares with logged predictions; it cannot go with {self.reference}")


@dataclass
class MonitorOutcome:
    """One monitoring pass: the verdict, the MLflow run that keeps it, its HTML reports and the alert sent."""

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
    """The window judged: recent logged predictions of `version` (of every version with `all_versions`)."""
    if request.current_last is None and request.since is None:
        raise ConfigError("choose the current window with --current-last N and/or --since TIME")
    frame = log.window(
        request.task,
        last_n=request.current_last,
        since=request.since,
        version=None if request.all_versions else version.version,
        kind=version.kind,
    )
    details: dict[str, Any] = {"versions": sorted(frame["version"].unique().tolist()) if len(frame) else []}
    if len(frame):
        details["from"] = frame["created_at"].min().isoformat()
        details["to"] = frame["created_at"].max().isoformat()
    return DriftWindow.of_logged(frame, kind="recent predictions", details=details, task_kind=version.kind)


def reference_window(
    registry: PrefixRegistry, log: PredictionLog, request: MonitorRequest, version: PrefixVersion, current: DriftWindow
) -> DriftWindow:
    """The window `current` is compared with, of the kind `request.reference` names."""
    if request.reference == CHAMPION_VALIDATION:
        frame = load_reference_frame(registry, version)
        return DriftWindow.of_reference(
            frame, kind=CHAMPION_VALIDATION, details={"version": version.version}, task_kind=version.kind
        )
    until = datetime.fromisoformat(current.details["from"]) if current.details.get("from") else None
    frame = log.window(
        request.task,
        last_n=request.reference_last,
        until=until,
        version=None if request.all_versions else version.version,
        kind=version.kind,
    )
    return DriftWindow.of_logged(
        frame, kind=f"{request.reference_last} logged predictions before the window", task_kind=version.kind
    )


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

    def embed(texts: Sequence[str]) -> np.ndarray:
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
        outcome.run_id = record_verdict(registry, report, report_dir, config)
    if send_alerts and report.verdict.drift_detected:
        delivery = send_alert(drift_alert(report.verdict, outcome.run_id), settings=registry.settings)
        outcome.alert = (
            delivery.to_dict() if delivery is not None else {"sent": False, "reason": "no webhooks configured"}
        )
    return outcome
