"""Fault scenarios with the artifact store down: an MLflow server whose artifacts live in SeaweedFS S3, and S3 stopped.

The MLflow server proxies artifacts (`--artifacts-destination s3://...`, as infra/docker-compose.yml runs it), so
the tracking store answers while every adapter, reference and data file is out of reach. Each scenario stops S3,
does its work, starts S3 again on the same ports and data, and reports what was acknowledged, what is missing and
the registry's state (alias, history, versions and whether each version's files are in the bucket).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.alias_movers import PREFIXCTL
from tests.faults.scenarios import (
    TEXTS,
    FaultOutcome,
    ServeProcess,
    _clients,
    _judge_retry,
    _versions,
    attempt_retrain,
    home_env,
    log_fresh_labels,
)
from tests.servers.s3_server import SeaweedS3

# MLflow's own retry budget (7 tries with backoff) keeps a command waiting for minutes: bounded as `prefixctl serve`
# bounds it, so a scenario measures the answer, not the backoff.
BOUNDED_MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
ARTIFACTS_PREFIX = "mlflow-artifacts"  # the key prefix of `--artifacts-destination s3://BUCKET/mlflow-artifacts`


def versions_without_files(s3: SeaweedS3, task: str) -> list[str]:
    """Versions of `task` whose adapter weights are not in the bucket (each must have them: none may be half-made)."""
    from prefix_registry.registry.store import PrefixRegistry

    registry = PrefixRegistry()
    keys = set(s3.keys(f"{ARTIFACTS_PREFIX}/"))
    missing = []
    for version in registry.versions(task):
        folder = version.source.removeprefix("mlflow-artifacts:/").strip("/")
        if f"{ARTIFACTS_PREFIX}/{folder}/adapter_model.safetensors" not in keys:
            missing.append(version.version)
    return missing


def _registry_state(home: Path, task: str, s3: SeaweedS3 | None = None) -> dict[str, Any]:
    """Alias, history and versions of `task`; with `s3` (running), also the versions whose files it lacks."""
    from prefix_registry.registry.store import PrefixRegistry

    registry = PrefixRegistry()
    history = [e.to_version for e in registry.alias_history(task) if e.alias == "champion"]
    return {
        "alias": registry.aliases(task).get("champion"),
        "history_last": history[-1] if history else None,
        "history_entries": len(history),
        "versions": _versions(home, task),
    } | ({"versions_without_files": versions_without_files(s3, task)} if s3 is not None else {})


def _served_version(url: str, task: str) -> str | None:
    answer = httpx.post(f"{url}/v1/predict", json={"task": task, "texts": TEXTS[:1]}, timeout=60)
    return answer.json()["version"] if answer.status_code == 200 else None


def s3_down_during_serving(home: Path, task: str, s3: SeaweedS3, mlflow_url: str) -> FaultOutcome:
    """S3 stops under a running server: predictions and feedback go on, every acknowledged row is logged; `promote`
    to v2 (whose files are now out of reach) either moves the alias with its history entry, the server keeping the
    old champion until S3 is back and then switching, or refuses in one line. Either way alias == last entry."""
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.traffic.prediction_log import PredictionLog

    started = time.perf_counter()
    env = home_env(home, MLFLOW_TRACKING_URI=mlflow_url)
    server = ServeProcess(env)
    problems: list[str] = []
    acked: list[str] = []
    errors: list[str] = []
    before = PrefixRegistry().aliases(task)["champion"]
    target = next(v for v in reversed(_versions(home, task)) if v != before)
    served_during: set[str] = set()
    try:
        server.wait_ready()
        s3.stop()
        stop = threading.Event()
        threads = _clients(server.url, task, 2, stop, acked, errors)
        time.sleep(2)
        feedback = httpx.post(
            f"{server.url}/v1/feedback", json={"prediction_id": acked[0], "label": "positive"}, timeout=60
        ) if acked else None  # fmt: skip
        if feedback is None or feedback.status_code != 200:
            problems.append(f"feedback during the outage: {feedback.status_code if feedback else 'no prediction'}")
        promote = subprocess.run(
            [PREFIXCTL, "promote", task, target, "--force", "--reason", "S3 is down"],
            env={**env, **BOUNDED_MLFLOW_HTTP},
            capture_output=True,
            text=True,
            timeout=300,
        )
        promote_lines = promote.stderr.strip().splitlines()
        if promote.returncode not in (0, 2) or len(promote_lines) > 1 or "Traceback" in promote.stderr:
            problems.append(f"promote during the outage: exit {promote.returncode}: {promote.stderr.strip()[-300:]}")
        time.sleep(4)  # a few poll intervals: the server tries the new champion and cannot load it
        served_during.add(str(_served_version(server.url, task)))
        during = _registry_state(home, task)  # S3 is down: no listing
        s3.start()
        expected = during["alias"]
        deadline = time.monotonic() + 90
        served_after = _served_version(server.url, task)
        while served_after != expected and time.monotonic() < deadline:
            time.sleep(1)
            served_after = _served_version(server.url, task)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        server.stop()
        s3.start()  # a no-op unless the scenario broke off during the outage
    with PredictionLog(f"sqlite:///{home / 'predictions.db'}") as log:
        missing = [pid for pid in acked if log.get(pid) is None]
    after = _registry_state(home, task, s3)
    if errors:
        problems.append(f"{len(errors)} non-200 answers, e.g. {errors[0]}")
    if len(acked) < 4:
        problems.append(f"only {len(acked)} predictions acknowledged during the outage")
    if after["alias"] != after["history_last"]:
        problems.append(f"alias {after['alias']} is not the last history entry {after['history_last']}")
    moved = during["alias"] == target
    if moved and served_during != {before}:
        problems.append(f"while S3 was down the server answered with {served_during}, not the old champion {before}")
    if served_after != after["alias"]:
        problems.append(
            f"90 s after S3 came back the server answers with v{served_after}, the alias is {after['alias']}"
        )
    if after["versions_without_files"]:
        problems.append(f"versions without files: {after['versions_without_files']}")
    return FaultOutcome(
        "S3 down during predict, feedback, promote",
        f"2 clients, 1 feedback, promote v{before}->v{target} while S3 was stopped",
        len(missing),
        {"acknowledged": len(acked), "missing_from_log": len(missing), "promote_exit": promote.returncode,
         "promote_said": (promote_lines or ["-"])[-1][:140], "alias_moved": moved,
         "served_during": sorted(served_during), "served_after_return": served_after, **after},
        problems,
        time.perf_counter() - started,
    )  # fmt: skip


def _monitor_runs(task: str) -> list[dict[str, Any]]:
    """The task's monitoring runs, newest first: MLflow status, judged status tag and verdict line."""
    from prefix_registry.monitoring.drift_runs import STATUS_TAG, VERDICT_TAG, monitoring_runs
    from prefix_registry.registry.store import PrefixRegistry

    runs = monitoring_runs(PrefixRegistry(), task, max_results=50)
    return [
        {
            "status": r.info.status,
            "judged": r.data.tags.get(STATUS_TAG),
            "verdict": r.data.tags.get(VERDICT_TAG, "")[:60],
        }
        for r in runs
    ]


MONITOR_PASSES = {  # the default reference lives in S3; a logged one is judged without it, but recorded with it
    "champion-validation": [],
    "logged": ["--reference", "logged", "--reference-last", "150", "--current-last", "150"],
}


def _monitor_pass(command: list[str], env: dict[str, str], task: str, problems: list[str]) -> dict[str, Any]:
    """One monitor pass (S3 down): it records a whole verdict, or fails in one line leaving no run that claims a
    verdict it could not store (a failed run with a status tag would be read as judged by the retrain)."""
    before = len(_monitor_runs(task))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    now = _monitor_runs(task)
    runs = now[: len(now) - before]
    said = done.stderr.strip().splitlines()
    if done.returncode not in (0, 2, 3) or "Traceback" in done.stderr or (done.returncode == 2 and len(said) != 1):
        problems.append(f"{command[-1]} pass during the outage: exit {done.returncode}: {done.stderr.strip()[-300:]}")
    half = [run for run in runs if run["status"] != "FINISHED" and run["judged"]]
    if half:
        problems.append(f"runs claiming a verdict they could not store: {half}")
    if done.returncode in (0, 3) and not any(run["status"] == "FINISHED" for run in runs):
        problems.append("monitor answered during the outage but recorded no run: its verdict is lost")
    return {"exit": done.returncode, "said": (said or ["-"])[-1][:120], "runs": runs, "half_recorded": len(half)}


def s3_down_during_monitor(home: Path, task: str, s3: SeaweedS3, mlflow_url: str) -> FaultOutcome:
    """`prefixctl monitor` while S3 is down, with the default reference (its files in S3) and a logged one: each pass
    either records its whole verdict (run, verdict file, drift event) or fails in one line having recorded no
    verdict half-way; the predictions stay in the log, and after S3 is back the same monitor succeeds."""
    from prefix_registry.flows.event_outbox import OUTBOX_FILE, EventOutbox
    from prefix_registry.registry.store import PrefixRegistry

    started = time.perf_counter()
    env = {**home_env(home, MLFLOW_TRACKING_URI=mlflow_url), **BOUNDED_MLFLOW_HTTP}
    os.environ.update({"MLFLOW_TRACKING_URI": mlflow_url})
    log_fresh_labels(home, task, PrefixRegistry().aliases(task)["champion"], n=300)  # a logged window to judge
    problems: list[str] = []
    passes: dict[str, dict[str, Any]] = {}
    s3.stop()
    try:
        for name, extra in MONITOR_PASSES.items():
            passes[name] = _monitor_pass(
                [PREFIXCTL, "monitor", task, "--no-alert", "--json", *extra], env, task, problems
            )
    finally:
        s3.start()
    back = {}
    for name, extra in MONITOR_PASSES.items():
        done = subprocess.run(
            [PREFIXCTL, "monitor", task, "--no-alert", "--json", *extra], env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        back[name] = done.returncode
        if done.returncode not in (0, 3):
            problems.append(f"{name} pass after S3's return: exit {done.returncode}: {done.stderr.strip()[-300:]}")
    outbox = EventOutbox(home / OUTBOX_FILE)
    return FaultOutcome(
        "S3 down during monitor",
        "2 monitor passes (reference in S3, logged) while S3 was stopped",
        sum(p["half_recorded"] for p in passes.values()),
        {**{f"{name}_during": p for name, p in passes.items()}, "exit_after_return": back,
         "drift_events_pending": len(outbox.pending())},
        problems,
        time.perf_counter() - started,
    )  # fmt: skip


def s3_down_during_retrain(home: Path, task: str, s3: SeaweedS3, mlflow_url: str) -> FaultOutcome:
    """A retrain while S3 is down fails with nothing registered (no version without files); once S3 is back the
    retry runs at once and registers one challenger whose files are in the bucket; no label is lost."""
    from prefix_registry.registry.store import PrefixRegistry

    started = time.perf_counter()
    os.environ.update({"MLFLOW_TRACKING_URI": mlflow_url, **BOUNDED_MLFLOW_HTTP})
    registry = PrefixRegistry()
    before = {"versions": _versions(home, task), "alias": registry.aliases(task)["champion"]}
    labelled = log_fresh_labels(home, task, before["alias"])
    problems: list[str] = []
    s3.stop()
    try:
        error = attempt_retrain(registry, home, task, "S3", problems)
    finally:
        s3.start()
    state = _judge_retry(home, task, labelled, before, problems, broken_run_left_running=False)
    without_files = versions_without_files(s3, task)
    if without_files:
        problems.append(f"versions without files: {without_files}")
    return FaultOutcome(
        "S3 down during retrain",
        "retrain while S3 was stopped, then a retry after it returned",
        state["after_retry"]["labels_lost"],
        {"error": error, "versions_without_files": without_files, **state},
        problems,
        time.perf_counter() - started,
    )
