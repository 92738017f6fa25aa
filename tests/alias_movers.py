"""Many `prefixctl promote` / `rollback` processes started at once against one registry, and what they left.

Used by tests/test_alias_concurrency.py (SQLite store, MLflow server on PostgreSQL) and by the fault suite.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PREFIXCTL = str(Path(sys.executable).with_name("prefixctl"))
# Each mover imports prefixctl and MLflow first, says it is ready (a file), then waits for the common go (another
# file) and runs the command: the moves then really overlap, instead of being spread out by how long each process
# took to import, and nobody waits longer than the slowest import.
MOVER = """
import sys, time
from pathlib import Path
import mlflow.tracking  # noqa: F401
from prefix_registry.cli import main
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
sys.argv = ["prefixctl", *sys.argv[3:]]
ready.touch()
while not go.exists():
    time.sleep(0.002)
main()
"""
# Promotions and rollbacks interleaved: most move the alias, some find nothing to do (a one-line refusal).
MOVES = [
    ["promote", "2"],
    ["rollback"],
    ["promote", "3"],
    ["promote", "1"],
    ["rollback"],
    ["promote", "2"],
    ["rollback"],
    ["promote", "3"],
]


@dataclass
class MoverResult:
    args: list[str]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def moved(self) -> bool:
        """True when the command exited 0 and changed the alias (a promotion of the current version does not)."""
        if self.exit_code != 0:
            return False
        change = json.loads(self.stdout)
        return change["from"] != change["to"]


def seed_task(task: str, versions: int = 3) -> None:
    """A task with `versions` registered versions (no training: the source is never read) and v1 champion.

    The source is a remote URI because an MLflow server refuses local paths outside a run's artifacts.
    """
    from prefix_registry.registry.store import PrefixRegistry

    registry = PrefixRegistry()
    registry.ensure_task(task)
    for _ in range(versions):
        registry.gateway.create_version(task, source="s3://nowhere/adapter", run_id=None)
    registry.promote(task, "1")


def run_movers(
    task: str, moves: list[list[str]] | None = None, timeout: float = 240, ready_within: float = 180.0
) -> list[MoverResult]:
    """Run every move as its own `prefixctl ... --json` process, all released at once when every one has imported."""
    moves = moves or MOVES
    with tempfile.TemporaryDirectory(prefix="movers-") as folder:
        go = Path(folder) / "go"
        processes = [
            (
                args,
                subprocess.Popen(
                    [sys.executable, "-c", MOVER, str(Path(folder) / f"ready-{i}"), str(go), *_command(task, args)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=dict(os.environ),
                ),
            )
            for i, args in enumerate(moves)
        ]
        deadline = time.monotonic() + ready_within
        while len(list(Path(folder).glob("ready-*"))) < len(moves):
            if time.monotonic() > deadline or any(process.poll() is not None for _, process in processes):
                break  # a mover that died or hangs: release the rest, its result below says why
            time.sleep(0.05)
        go.touch()
        return _collect(processes, timeout)


def _command(task: str, args: list[str]) -> list[str]:
    """`promote 2` -> `promote TASK 2 --json`."""
    return [args[0], task, *args[1:], "--json"]


def _collect(processes: list[tuple[list[str], subprocess.Popen[str]]], timeout: float) -> list[MoverResult]:
    results = []
    for args, process in processes:
        out, err = process.communicate(timeout=timeout)
        results.append(MoverResult(args, process.returncode, out, err))
    return results


def check_history(task: str, results: list[MoverResult], entries_before: int) -> dict:
    """The state after the movers, and every inconsistency found (an empty `problems` list means none)."""
    from prefix_registry.registry.store import PrefixRegistry

    registry = PrefixRegistry()
    history = [event for event in registry.alias_history(task) if event.alias == "champion"]
    alias = registry.aliases(task).get("champion")
    new = history[entries_before:]
    problems = []
    moved = sum(result.moved for result in results)
    if len(new) != moved:
        problems.append(f"{moved} commands moved the alias but {len(new)} history entries were added")
    for earlier, later in itertools.pairwise(history):
        if later.from_version != earlier.to_version:
            problems.append(f"entry {later.sequence} moves from {later.from_version}, not {earlier.to_version}")
    if len({event.sequence for event in history}) != len(history):
        problems.append("duplicate sequence numbers")
    if history and alias != history[-1].to_version:
        problems.append(f"alias is on {alias} but the last entry says {history[-1].to_version}")
    for result in results:
        lines = result.stderr.strip().splitlines()
        if result.exit_code not in (0, 2):
            problems.append(f"{result.args}: exit {result.exit_code}: {result.stderr.strip()[-300:]}")
        if result.exit_code == 2 and (len(lines) != 1 or "Background on this error" in result.stderr):
            problems.append(f"{result.args}: not a one-line error: {result.stderr.strip()[:300]}")
    return {
        "alias": alias,
        "entries": len(history),
        "moved": moved,
        "refused": [r.stderr.strip() for r in results if r.exit_code != 0],
        "problems": problems,
    }
