"""MLflow runs as context managers: a run that raises is marked FAILED (KILLED on Ctrl-C), never left RUNNING."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.training.trainer import EpochReport

RUN_KIND_TAG = "prefix_registry.kind"
MAX_PARAM_LENGTH = 6000


class RecordedRun:
    """One MLflow run of a task's experiment: params, metrics and artifacts, finished by leaving the `with` block.

    Example:
        with RecordedRun(registry, "sentiment", "train", kind="train") as run:
            run.log_params({"lr": 0.005})
            run.log_metrics({"test_macro_f1": 0.79})
    """

    def __init__(
        self,
        registry: PrefixRegistry,
        task: str,
        run_name: str,
        kind: str,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.registry = registry
        self.task = task
        self.run_name = run_name
        self.tags = {RUN_KIND_TAG: kind, **(tags or {})}
        self.run_id = ""
        self.artifact_uri = ""

    def __enter__(self) -> RecordedRun:
        experiment_id = self.registry.ensure_task(self.task)
        with self.registry._mlflow_errors(f"start a run for {self.task}"):
            run = self.registry.client.create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        self.run_id = run.info.run_id
        self.artifact_uri = run.info.artifact_uri
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            status = "FINISHED"
        else:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
            message = f"{exc_type.__name__}: {exc}"[:5000]
            # The original error matters more than a failed tag.
            with contextlib.suppress(Exception):
                self.registry.client.set_tag(self.run_id, "prefix_registry.error", message)
        self.registry.client.set_terminated(self.run_id, status)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, _param_value(value)) for key, value in params.items()]
        for start in range(0, len(entries), 100):
            self.registry.client.log_batch(self.run_id, params=entries[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int = 0, timestamp_ms: int | None = None) -> None:
        """Log metrics at `step`, stamped `timestamp_ms` (epoch milliseconds; default now)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        entries = [
            Metric(key, float(value), now, step)
            for key, value in metrics.items()
            if isinstance(value, int | float) and math.isfinite(float(value))
        ]
        for start in range(0, len(entries), 500):
            self.registry.client.log_batch(self.run_id, metrics=entries[start : start + 500])

    def log_evaluation(self, report: EpochReport) -> None:
        """Per-epoch curve: train loss and validation metrics at step = epoch."""
        self.log_metrics(
            {
                "train_loss": report.train_loss,
                "validation_accuracy": report.validation["accuracy"],
                "validation_macro_f1": report.validation["macro_f1"],
                "optimizer_steps": report.step,
            },
            step=report.evaluation,
        )

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.registry.client.set_tag(self.run_id, key, value)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        with self.registry._mlflow_errors(f"upload artifacts of run {self.run_id}"):
            self.registry.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_json(self, payload: Any, artifact_file: str) -> None:
        self.registry.client.log_text(self.run_id, json.dumps(payload, indent=2, default=str), artifact_file)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_LENGTH]
