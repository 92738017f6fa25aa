"""MLflow runs as context managers: a run that raises is marked FAILED (KILLED on Ctrl-C), never left RUNNING.

A run whose process dies (kill -9, OOM, power loss) or loses MLflow before it can close the run stays RUNNING in
MLflow. Every run therefore records its owner (host, pid and the process's start time) and the next training of
the task closes such runs (`close_stale_runs`): KILLED, with the reason in a tag. The owner's liveness is checked,
not a heartbeat's age: a heartbeat needs a thread writing to MLflow all through training, and would call a live
run dead whenever MLflow is briefly away (the fault this is for). Only runs owned on this host can be checked;
others are left to their own host's next start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from prefix_registry.registry.eval_sets import curve_metric_name
from prefix_registry.registry.gateway import ExperimentPurpose, RunStatus
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.training.trainer import EpochReport

RUN_KIND_TAG = "prefix_registry.kind"
RUN_OWNER_TAG = "prefix_registry.owner"  # "HOST PID START": the process that started the run
RUN_ERROR_TAG = "prefix_registry.error"
RUN_STALE_TAG = "prefix_registry.stale_reason"
MAX_PARAM_LENGTH = 6000

logger = logging.getLogger(__name__)

# Runs this process has open: a RUNNING run owned by this process but not in here lost MLflow before it closed.
_open_runs: set[str] = set()


def process_owner(pid: int | None = None) -> str:
    """`HOST PID START` of a process (default: this one); START (its start time in clock ticks since boot) tells a
    process from a later one that reuses its pid."""
    pid = os.getpid() if pid is None else pid
    stat = _proc_stat(pid)
    return f"{socket.gethostname()} {pid} {stat[19] if stat else '-'}"


def owner_gone(owner: str, still_open: bool = False) -> str | None:
    """Why the process named by `owner` (see `process_owner`) can no longer finish its work, or None when it may.

    `still_open`: whether this process still holds the work open, for an owner that is this very process.
    Owners on another host (or unreadable) give None: their liveness cannot be checked from here.
    """
    parts = owner.split()
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    host, pid, start = parts[0], int(parts[1]), parts[2]
    if owner == process_owner():
        return None if still_open else f"process {pid} on {host} lost it before finishing (an error on the way out)"
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return f"process {pid} on {host} is gone (killed, crashed or out of memory)"
    if start != "-" and stat[19] != start:
        return f"process {pid} on {host} is gone (its pid now belongs to another process)"
    return None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat from the 3rd (state) on, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (2nd field) may hold spaces and parentheses: split after its last closing one.
    return stat.rsplit(")", 1)[1].split()


def close_stale_runs(registry: PrefixRegistry, task: str) -> list[str]:
    """Mark KILLED every RUNNING run of `task` whose owner is gone (see `owner_gone`), with the reason in the
    `prefix_registry.stale_reason` and `prefix_registry.error` tags. Returns their run ids.

    Runs without an owner tag (started before owners were recorded) are left as they are: nothing tells whether
    they still run.
    """
    running = registry.gateway.search_runs(
        [registry.experiment_id(task, purpose) for purpose in ExperimentPurpose],
        f"attributes.status = '{RunStatus.RUNNING}'",
        max_results=1000,
        what=f"search the running runs of {task}",
    )
    closed = []
    for run in running:
        owner = run.data.tags.get(RUN_OWNER_TAG)
        reason = owner_gone(owner, still_open=run.info.run_id in _open_runs) if owner else None
        if reason is None:
            continue
        note = f"left RUNNING: {reason}; closed at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} by {process_owner()}"
        what = f"close stale run {run.info.run_id}"
        registry.gateway.set_run_tags(run.info.run_id, {RUN_STALE_TAG: note, RUN_ERROR_TAG: note}, what=what)
        registry.gateway.end_run(run.info.run_id, RunStatus.KILLED, what=what)
        logger.warning("%s: run %s %s", task, run.info.run_id, note)
        closed.append(run.info.run_id)
    return closed


class RecordedRun:
    """One MLflow run of a task's experiment for `purpose` (training by default, or monitoring): params, metrics and
    artifacts, finished by leaving the `with` block.

    Example:
        with RecordedRun(registry, "sentiment", "train", kind="train") as run:
            run.log_params({"lr": 0.005})
            run.log_metrics({"train_seconds": 41.5})
    """

    def __init__(
        self,
        registry: PrefixRegistry,
        task: str,
        run_name: str,
        kind: str,
        tags: dict[str, str] | None = None,
        purpose: ExperimentPurpose = ExperimentPurpose.TRAINING,
    ) -> None:
        self.registry = registry
        self.purpose = purpose
        self.task = task
        self.run_name = run_name
        self.tags = {RUN_KIND_TAG: kind, RUN_OWNER_TAG: process_owner(), **(tags or {})}
        self.run_id = ""
        self.artifact_uri = ""

    def __enter__(self) -> RecordedRun:
        self.registry.ensure_task(self.task)
        experiment_id = self.registry.experiment_id(self.task, self.purpose)
        run = self.registry.gateway.create_run(
            experiment_id, self.run_name, self.tags, what=f"start a run for {self.task}"
        )
        self.run_id = run.info.run_id
        self.artifact_uri = run.info.artifact_uri
        _open_runs.add(self.run_id)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        gateway = self.registry.gateway
        if exc_type is None:
            status = RunStatus.FINISHED
        else:
            status = RunStatus.KILLED if issubclass(exc_type, KeyboardInterrupt) else RunStatus.FAILED
            message = f"{exc_type.__name__}: {exc}"[:5000]
            # The original error matters more than a failed tag.
            with contextlib.suppress(Exception):
                gateway.set_run_tags(self.run_id, {RUN_ERROR_TAG: message})
        # Unregistered first: should MLflow refuse the status now, the run is stale and the next start closes it.
        _open_runs.discard(self.run_id)
        if exc_type is None:
            gateway.end_run(self.run_id, status)
            return
        # The original error matters more than a status MLflow may be unable to take right now.
        try:
            gateway.end_run(self.run_id, status)
        except Exception as error:
            logger.warning("run %s stays RUNNING until the next start closes it: %s", self.run_id, error)

    def log_params(self, params: dict[str, Any]) -> None:
        self.registry.gateway.log_params(self.run_id, {key: _param_value(value) for key, value in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int = 0, timestamp_ms: int | None = None) -> None:
        """Log metrics at `step`, stamped `timestamp_ms` (epoch milliseconds; default now)."""
        finite = {
            key: float(value)
            for key, value in metrics.items()
            if isinstance(value, int | float) and math.isfinite(float(value))
        }
        self.registry.gateway.log_metrics(self.run_id, finite, step=step, timestamp_ms=timestamp_ms)

    def log_evaluation(self, report: EpochReport, train_set: str, validation_set: str) -> None:
        """Per-evaluation curves at step = the optimizer step: the train loss on `train_set` and the validation
        figures of the task's kind (the plain numbers of its metrics) on `validation_set`, each named by its set
        (`curve/<set>/<figure>`, see eval_sets.py), so that no curve shares a name with another set's."""
        scores = {
            curve_metric_name(validation_set, name): float(value)
            for name, value in report.validation.items()
            if name != "n" and isinstance(value, int | float) and not isinstance(value, bool)
        }
        self.log_metrics({curve_metric_name(train_set, "loss"): report.train_loss, **scores}, step=report.step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.registry.gateway.set_run_tags(self.run_id, tags)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        self.registry.gateway.log_artifacts(self.run_id, local_dir, artifact_path)

    def log_json(self, payload: Any, artifact_file: str) -> None:
        self.registry.gateway.log_text(self.run_id, json.dumps(payload, indent=2, default=str), artifact_file)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_LENGTH]
