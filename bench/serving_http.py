"""The HTTP half of the serving benchmark: a real `prefixctl serve` process and asyncio clients that load it.

    flags = serve_flags()                                   # the options this build's `prefixctl serve` accepts
    with ServeProcess(["--max-batch", "32"], env) as server:
        result = run_load(server.url, Load(8, 1, 10), task_sets, texts, seconds=10, seed=1)

The server is a separate process, so the clients (one asyncio loop in the benchmark's process) never share its GIL;
both share the machine's cores, as a client on the same host would. Every request names one task, drawn at random
(seeded per client) from the load's task set, and one or more texts taken in turn from a shuffled stream, so runs
with the same seed send the same requests.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from prefix_registry.errors import PrefixRegistryError
from prefix_registry.flows.loopback import HOST, free_port

READY_TIMEOUT_S = 600.0  # an int8 server may export and quantise its backbone before it answers /healthz
REQUEST_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 120.0
OPTION = re.compile(r"--[a-z][a-z0-9-]+")


def prefixctl() -> str:
    """The `prefixctl` of this interpreter's environment."""
    return str(Path(sys.executable).with_name("prefixctl"))


def serve_flags(env: Mapping[str, str] | None = None) -> set[str]:
    """Every `--option` that `prefixctl serve --help` names: what this build's server can be asked to do."""
    plain = {**(env or os.environ), "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run(
        [prefixctl(), "serve", "--help"], env=plain, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise PrefixRegistryError(f"expected `prefixctl serve --help` to succeed, got exit {done.returncode}")
    return set(OPTION.findall(done.stdout))


@dataclass(frozen=True)
class Load:
    """`clients` concurrent clients, each sending requests of `texts_per_request` texts back to back, each request
    to one task drawn at random from the first `tasks` tasks."""

    clients: int
    texts_per_request: int
    tasks: int

    @property
    def name(self) -> str:
        plural = "s" if self.texts_per_request > 1 else ""
        return f"{self.clients} clients x {self.texts_per_request} text{plural}, {self.tasks} task" + (
            "s" if self.tasks > 1 else ""
        )


class ServeProcess:
    """`prefixctl serve` on a free loopback port in a child process, ready (its /healthz answers 200) on entry,
    stopped with SIGTERM (a clean stop: the prediction log is flushed) on exit. Its stderr goes to `log_path`: a
    pipe nobody reads would stall a server that writes much."""

    def __init__(self, flags: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.command = [
            prefixctl(),
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            # Alias following is not what is measured: one check of 100 tasks' aliases a minute at most.
            "--poll-interval",
            "600",
            *flags,
        ]
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_seconds = 0.0

    def __enter__(self) -> ServeProcess:
        began = time.perf_counter()
        with self.log_path.open("wb") as stderr:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrefixRegistryError(
                    f"expected `{' '.join(self.command[1:])}` to serve, but it exited with {self.process.returncode}: "
                    f"{self.stderr_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    self.ready_seconds = time.perf_counter() - began
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise PrefixRegistryError(f"expected the server to answer /healthz within {READY_TIMEOUT_S:.0f} s; it did not")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def rss_bytes(self) -> int | None:
        """The server's resident set size (Linux /proc), or None."""
        if self.process is None:
            return None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def served_precisions(self) -> dict[str, int] | None:
        """How many served versions run at each precision, from the server's /metrics (None: not reported)."""
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=10).text
        except httpx.HTTPError:
            return None
        counts: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("prefix_registry_serving_precision{") and line.rstrip().endswith(" 1.0"):
                precision = line.split('precision="', 1)[1].split('"', 1)[0]
                counts[precision] = counts.get(precision, 0) + 1
        return counts or None

    def stderr_tail(self, limit: int = 1500) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " ".join(text[-limit:].split())


def run_load(
    url: str,
    load: Load,
    task_sets: Mapping[int, Sequence[str]],
    texts: Sequence[str],
    seconds: float,
    seed: int,
) -> dict[str, Any]:
    """`load` against the server at `url` for `seconds` (requests in flight at the end are waited for and counted).

    Returns texts/s and requests/s over the wall time (answered ones only), p50/p90/p99/max latency per request in
    ms (answered ones), the answers by status (a transport error by its exception's name), and the first errors.
    """
    return asyncio.run(_load(url, load, task_sets[load.tasks], texts, seconds, seed))


async def _load(
    url: str, load: Load, tasks: Sequence[str], texts: Sequence[str], seconds: float, seed: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=load.clients, max_keepalive_connections=load.clients)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    answered_texts = 0
    k = load.texts_per_request

    async def client(index: int, http: httpx.AsyncClient, deadline: float) -> None:
        nonlocal answered_texts
        rng = random.Random(seed * 1_000 + index)
        position = rng.randrange(len(texts))
        while time.perf_counter() < deadline:
            task = rng.choice(tasks)
            batch = [texts[(position + j) % len(texts)] for j in range(k)]
            position += k
            began = time.perf_counter()
            try:
                response = await http.post("/v1/predict", json={"task": task, "texts": batch})
                status = str(response.status_code)
                ok = response.status_code == 200 and len(response.json().get("predictions", ())) == k
                if not ok and len(errors) < 5:
                    errors.append(f"{status} {task}: {response.text[:200]}")
            except (httpx.HTTPError, ValueError) as error:
                status, ok = type(error).__name__, False
                if len(errors) < 5:
                    errors.append(f"{status} {task}: {error}")
            statuses[status] += 1
            if ok:
                latencies.append(time.perf_counter() - began)
                answered_texts += k

    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        began = time.perf_counter()
        deadline = began + seconds
        await asyncio.gather(*(client(i, http, deadline) for i in range(load.clients)))
        wall = time.perf_counter() - began
    array = np.array(latencies) * 1000
    return {
        "load": load.name,
        "clients": load.clients,
        "texts_per_request": k,
        "tasks": load.tasks,
        "seconds": seconds,
        "wall_seconds": wall,
        "requests": sum(statuses.values()),
        "answered": len(latencies),
        "texts": answered_texts,
        "status_counts": dict(sorted(statuses.items())),
        "errors": errors,
        "texts_per_second": answered_texts / wall,
        "requests_per_second": len(latencies) / wall,
        "latency_ms": _percentiles(array),
    }


def _percentiles(ms: np.ndarray) -> dict[str, float | None]:
    if not len(ms):
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    values: dict[str, float | None] = {f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}
    return {**values, "mean": float(ms.mean()), "max": float(ms.max())}
