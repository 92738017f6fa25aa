"""The quick demo, started as soon as the session knows it will check it, and read back by tests/test_demo.py.

The demo is a subprocess of about ten minutes that mostly waits on one core (its Prefect server, its runner's flow
runs, its HTTP traffic). Started when collection ends, it runs beside the rest of the suite; `test_demo.py` runs
last and only collects what it printed. Its torch uses one thread, so it leaves the suite the other core.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from prefix_registry.flows.loopback import stop_process

DEMO_TEST_FILE = "test_demo.py"
# On a quiet 2-core machine the quick story takes about 10 minutes alone and about 20 beside the suite; the limit
# leaves room for a busy machine (the test waits only for what is left of it).
FINISH_WITHIN_S = 3600.0


@dataclass
class DemoOutcome:
    """What the demo process left: its exit code, its JSON summary (stdout) and its narration (stderr)."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


class BackgroundDemo:
    """`prefixctl demo --quick --json` in its own folder, environment and model cache."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="prefix-demo-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> BackgroundDemo:
        prefixctl = Path(sys.executable).with_name("prefixctl")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "PREFIX_REGISTRY_"))}
        env["PREFIX_REGISTRY_CACHE_DIR"] = str(self.folder / "cache")  # MiniLM only: nothing to convert
        env["OMP_NUM_THREADS"] = "1"
        command = [str(prefixctl), "demo", "--quick", "--json", "--home", str(self.folder / "demo")]
        with (self.folder / "stdout").open("wb") as out, (self.folder / "stderr").open("wb") as err:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        self.started = time.monotonic()
        return self

    def outcome(self, timeout: float = FINISH_WITHIN_S) -> DemoOutcome:
        """Wait for the demo (up to `timeout` seconds from its start); stop it cleanly if it has not finished."""
        assert self.process is not None, "the demo was never started"
        remaining = max(1.0, timeout - (time.monotonic() - self.started))
        try:
            self.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            # SIGTERM first: the demo then stops its Prefect server and runner (a SIGKILL would orphan them).
            stop_process(self.process, grace=60)
        return DemoOutcome(
            returncode=self.process.returncode,
            stdout=(self.folder / "stdout").read_text(encoding="utf-8", errors="replace"),
            stderr=(self.folder / "stderr").read_text(encoding="utf-8", errors="replace"),
            seconds=time.monotonic() - self.started,
        )

    def stop(self) -> None:
        """Stop the demo if it still runs; its folder stays only when it failed (its narration says why)."""
        stop_process(self.process, grace=60)
        if self.process is None or self.process.returncode == 0:
            shutil.rmtree(self.folder, ignore_errors=True)
