"""The demo's servers: a Prefect server, the flow runner, a signed-webhook inbox and the prefix server.

`DemoStage` starts them in this process's environment (the demo's own MLflow store, Prefect home and webhooks) and
stops every one of them when the story ends, however it ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from prefix_registry.alerts.inbox import AlertInbox
from prefix_registry.flows.demo.config import DemoConfig
from prefix_registry.flows.local_server import LocalPrefectServer
from prefix_registry.flows.loopback import ThreadedUvicorn, stop_process

Say = Callable[[str], None]
DEPLOYMENTS = {"train-prefix", "monitor-prefix", "retrain-prefix", "judge-rollout"}


class DemoStage:
    """Every server of the story, on loopback; use as a context manager.

    Args:
        config: the story's sizes (the runner's retrain settings come from it).
        say: prints one line of the story.
        on_alert: called with each alert the inbox receives (its JSON, plus `signature_valid`).
    """

    def __init__(self, config: DemoConfig, say: Say, on_alert: Callable[[dict[str, Any]], None]) -> None:
        self.config = config
        self.say = say
        self.secret = secrets.token_hex(16)
        self.prefect = LocalPrefectServer(config.home / "prefect")
        self.inbox = AlertInbox(secret=self.secret, on_alert=on_alert)
        self.runner: subprocess.Popen[bytes] | None = None
        self.servers: list[ThreadedUvicorn] = []

    def __enter__(self) -> DemoStage:
        shutil.rmtree(self.config.home, ignore_errors=True)
        self.config.home.mkdir(parents=True)
        os.environ.update(
            {
                # The demo narrates; flow logs still reach the Prefect UI.
                "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "ERROR",
                "PREFIX_REGISTRY_HOME": str(self.config.home),
                "MLFLOW_TRACKING_URI": f"sqlite:///{self.config.home / 'mlflow.db'}",
                "PREFIX_REGISTRY_ALERT_SECRET": self.secret,
                # The story is drift and recovery, told on a throwaway store with models trained in minutes: a
                # version below its linear-probe baseline is promoted with a warning instead of being refused.
                "PREFIX_REGISTRY_BASELINE_GATE": "warn",
                **self.prefect.environment(),
            }
        )
        self.inbox.start()
        os.environ["PREFIX_REGISTRY_ALERT_WEBHOOKS"] = self.inbox.url
        try:
            self.say(f"starting a Prefect server on {self.prefect.ui_url}")
            self.prefect.start()
            self.runner = self._start_runner()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for server in self.servers:
            server.stop()  # flushes the prediction log
        stop_process(self.runner)
        self.prefect.stop()
        self.inbox.stop()

    def serve(self, app: Any) -> ThreadedUvicorn:
        """Serve `app` (the prefix server) on loopback until the stage ends."""
        self.servers.append(ThreadedUvicorn(app, name="prefix-server"))
        return self.servers[-1].start()

    def _start_runner(self) -> subprocess.Popen[bytes]:
        """`prefixctl flows serve` in a subprocess: the deployments, the schedule and the drift trigger."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import DeploymentStatus

        config = self.config
        prefixctl = Path(sys.executable).with_name("prefixctl")
        command = [
            str(prefixctl) if prefixctl.exists() else "prefixctl",
            "flows",
            "serve",
            "--monitor-every",
            "60",
            "--task",
            config.task,
            "--current-last",
            str(config.window),
            "--cooldown-minutes",
            "30",
            "--margin",
            str(config.margin),
            "--min-fresh-labels",
            str(config.min_fresh_labels),
        ]
        if config.challenger_epochs:
            command += ["--challenger-epochs", str(config.challenger_epochs)]
        if config.challenger_max_length:
            command += ["--challenger-max-length", str(config.challenger_max_length)]
        log_path = config.home / "runner.log"
        # The runner polls for runs every 2 s (Prefect's default is 10): the story's monitoring passes go through it.
        env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
        with log_path.open("ab") as log:
            runner = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                if runner.poll() is not None:
                    raise RuntimeError(f"the flow runner exited (see {log_path})")
                # Ready: the runner has polled each one for runs (Prefect 3 marks a deployment Ready on a poll).
                ready = {d.name for d in client.read_deployments() if d.status == DeploymentStatus.READY}
                if ready >= DEPLOYMENTS:
                    self.say(
                        "deployments served: train-prefix, monitor-prefix (every 60 min), "
                        "retrain-prefix (on prefix.drift.detected), judge-rollout (every 5 min)"
                    )
                    return runner
                time.sleep(1)
        stop_process(runner)
        raise RuntimeError("the flow runner did not register and poll its deployments within 3 minutes")
