"""Prometheus metrics of one server (its own collector registry, so several apps can live in one process)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class TableCollector(Collector):
    """Metrics read from the serving table at scrape time, so they can never disagree with it."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def collect(self) -> Iterator[Any]:
        version = GaugeMetricFamily("prefix_serving_version", "Version serving each task.", labels=["task"])
        swaps = CounterMetricFamily("prefix_swaps", "Alias moves followed without restart.", labels=["task"])
        for state in self.table.states():
            if state.attached is not None:
                version.add_metric([state.task], float(state.attached.version))
            swaps.add_metric([state.task], float(state.swaps))
        yield version
        yield swaps
        yield GaugeMetricFamily(
            "prefix_registry_up",
            "1 when the last registry check succeeded, else 0.",
            value=float(self.table.registry_ok),
        )
        yield GaugeMetricFamily(
            "prefix_resident_base_models", "Base models in memory.", value=len(self.table.pool.bases)
        )


class PrecisionCollector(Collector):
    """What each task's version serves at, and how often a version served slower than asked (a failed check)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def collect(self) -> Iterator[Any]:
        serving = GaugeMetricFamily(
            "prefix_registry_serving_precision",
            "1 for the precision (fp32, bf16, int8) each task's serving version runs at.",
            labels=["task", "version", "precision"],
        )
        fallbacks = CounterMetricFamily(
            "prefix_registry_precision_fallbacks",
            "Versions served at a higher precision than asked, their lower precision having failed its check.",
            labels=["task"],
        )
        for state in self.table.states():
            if state.attached is not None:
                serving.add_metric([state.task, state.attached.version, state.attached.precision.value], 1.0)
            fallbacks.add_metric([state.task], float(state.precision_fallbacks))
        yield serving
        yield fallbacks


class ServingMetrics:
    def __init__(self, table: Any) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(TableCollector(table))
        self.requests = Counter(
            "prefix_requests",
            "HTTP requests by endpoint, task and status code.",
            ["endpoint", "task", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "prefix_request_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.predictions = Counter(
            "prefix_predictions",
            "Texts classified, by task and version.",
            ["task", "version"],
            registry=self.registry,
        )
        self.swap_seconds = Histogram(
            "prefix_swap_seconds",
            "Time to attach a new version to its resident base.",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.log_pending = Gauge(
            "prefix_prediction_log_pending", "Predictions waiting to be written to the log.", registry=self.registry
        )
        self.feedback = Counter("prefix_feedback", "Feedback labels received.", ["task"], registry=self.registry)
        # Cross-request batching (serving/batcher.py reports to the three methods below).
        self.batch_rows = Histogram(
            "prefix_batch_rows",
            "Texts in each forward pass (rows of every task together).",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.batch_seconds = Histogram(
            "prefix_batch_seconds",
            "Time of each batch's forward pass.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.queue_wait = Histogram(
            "prefix_queue_wait_seconds",
            "Time from a request's arrival in the queue to its first forward pass.",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.queue_rows = Gauge(
            "prefix_queue_rows", "Texts waiting for a forward pass (the queue depth).", registry=self.registry
        )
        self.task_rows = Counter(
            "prefix_batch_task_rows",
            "Texts of each task run in forward passes (divided by prefix_batch_rows_count: rows per task per batch).",
            ["task"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "prefix_rejected_requests",
            "Prediction requests answered without running, by reason (queue_full, deadline, disconnected, shutdown).",
            ["reason"],
            registry=self.registry,
        )
        # Precision (issue 20): read from the table at scrape time, like TableCollector.
        self.registry.register(PrecisionCollector(table))

    def batch_ran(self, rows_by_task: Mapping[str, int], seconds: float) -> None:
        self.batch_rows.observe(sum(rows_by_task.values()))
        self.batch_seconds.observe(seconds)
        for task, rows in rows_by_task.items():
            self.task_rows.labels(task).inc(rows)  # rows come from served versions only: a bounded label set

    def request_waited(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)

    def request_rejected(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


_TASK_LABEL = re.compile(r'[{,]task="((?:[^"\\]|\\.)*)"')


def only_tasks(exposition: bytes, tasks: set[str]) -> bytes:
    """Prometheus text with every sample of a task outside `tasks` left out (samples without a task label, and
    those of unknown tasks, stay): what a key scoped to `tasks` may see."""
    kept = []
    for line in exposition.decode("utf-8").splitlines(keepends=True):
        match = None if line.startswith("#") else _TASK_LABEL.search(line)
        if match is None or match.group(1) in tasks or match.group(1) == "unknown":
            kept.append(line)
    return "".join(kept).encode("utf-8")
