"""`python -m tests.faults [--fast] [--json PATH] [--only TEXT]`: run the fault scenarios on loopback, print the table.

Everything runs in a temporary home with its own SQLite MLflow store and prediction log (plus an MLflow server for
the MLflow outages, and SeaweedFS S3 behind an MLflow server on PostgreSQL for the S3 outages); nothing outside
127.0.0.1 is contacted. Exit status 1 when any scenario lost or broke anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.faults import scenarios


def _use_home(home: Path, tracking_uri: str | None = None) -> None:
    os.environ["PREFIX_REGISTRY_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri or f"sqlite:///{home / 'mlflow.db'}"
    os.environ.setdefault(
        "PREFIX_REGISTRY_CACHE_DIR", str(Path(tempfile.gettempdir()) / "prefix-registry-faults-cache")
    )
    for name in ("PREFIX_REGISTRY_PREDICTION_LOG_URL", "PREFIX_REGISTRY_LOCK_URL", "PREFIX_REGISTRY_API_KEYS_URL"):
        os.environ.pop(name, None)


def _run_mlflow_outages(root: Path, run: Callable[[str, Callable[[], scenarios.FaultOutcome]], None]) -> None:
    """The MLflow outage scenarios: an MLflow server (SQLite store, artifacts on its disk) stopped and started."""
    from tests.servers.mlflow_server import MlflowServer

    home = root / "home"
    (root / "mlflow").mkdir(parents=True)
    with MlflowServer(root=root / "mlflow") as server:
        _use_home(home, server.url)
        scenarios.train_tiny_task(home, "sentiment")
        run(
            "MLflow down during predict, feedback, promote",
            lambda: scenarios.mlflow_down_during_serving(home, "sentiment", server),
        )
        run("MLflow down during monitor", lambda: scenarios.mlflow_down_during_monitor(home, "sentiment", server))
        run("MLflow down during retrain", lambda: scenarios.mlflow_down_during_retrain(home, "sentiment", server))


def _run_s3_outages(root: Path, run: Callable[[str, Callable[[], scenarios.FaultOutcome]], None]) -> None:
    """The S3 outage scenarios: SeaweedFS S3 holding the artifacts of an MLflow server on PostgreSQL."""
    from tests.faults import s3_outage
    from tests.servers.mlflow_server import MlflowServer
    from tests.servers.postgres_server import PostgresServer
    from tests.servers.s3_server import SeaweedS3

    home = root / "home"
    (root / "mlflow").mkdir(parents=True)
    with PostgresServer() as postgres, SeaweedS3(bucket="prefixes") as s3:
        os.environ.update(s3.env())  # read by the MLflow server, which alone talks to S3 (proxied artifacts)
        store = postgres.create_database("mlflow_s3")
        with MlflowServer(
            root=root / "mlflow", backend_store_uri=store, artifacts_destination="s3://prefixes/mlflow-artifacts"
        ) as server:
            _use_home(home, server.url)
            scenarios.train_tiny_task(home, "sentiment")
            scenarios.train_tiny_task(home, "sentiment", promote=False)
            run(
                "S3 down during predict, feedback, promote",
                lambda: s3_outage.s3_down_during_serving(home, "sentiment", s3, server.url),
            )
            run("S3 down during monitor", lambda: s3_outage.s3_down_during_monitor(home, "sentiment", s3, server.url))
            run("S3 down during retrain", lambda: s3_outage.s3_down_during_retrain(home, "sentiment", s3, server.url))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="Only the scenarios that run in CI.")
    parser.add_argument("--json", type=Path, help="Also write the outcomes to this JSON file.")
    parser.add_argument("--only", help="Only the scenarios whose name contains this text (e.g. retrain).")
    args = parser.parse_args()
    from prefix_registry.training.quiet import quiet_libraries

    quiet_libraries()
    outcomes: list[scenarios.FaultOutcome] = []

    def wanted(*names: str) -> bool:  # whether any of these scenarios is selected (their set-up is then needed)
        return not args.only or any(args.only in name for name in names)

    def run(name: str, scenario: Callable[[], scenarios.FaultOutcome]) -> None:
        if not wanted(name):
            return
        print(f"[faults] {name} ...", file=sys.stderr, flush=True)
        try:
            outcome = scenario()
        except Exception as error:  # one broken scenario must not hide the others' results
            outcome = scenarios.crashed(name, error)
        print(f"[faults] {name}: {'ok' if outcome.ok else 'NOT OK'} {outcome.row()}", file=sys.stderr, flush=True)
        outcomes.append(outcome)

    with tempfile.TemporaryDirectory(prefix="prefix-faults-") as root:
        home = Path(root) / "home"
        _use_home(home)
        run("8 promote/rollback processes at once", lambda: scenarios.concurrent_alias_moves(home))
        run("kill -9 mid-promotion", lambda: scenarios.kill9_mid_promotion(home))
        if wanted("kill -9 server under load", "kill -9 mid-training", "kill -9 mid-retrain"):
            scenarios.train_tiny_task(home, "sentiment")
        run("kill -9 server under load", lambda: scenarios.kill9_server_under_load(home, "sentiment"))
        if not args.fast:
            run("kill -9 mid-training", lambda: scenarios.kill9_mid_training(home))
            run("kill -9 mid-registration", lambda: scenarios.kill9_mid_registration(home))
            run("kill -9 mid-retrain", lambda: scenarios.kill9_mid_retrain(home, "sentiment"))
            run("flipped-label flood, then retrain", lambda: scenarios.poisoned_feedback_retrain(home))
            run(
                "flipped-label flood, then retrain (cap off)",
                lambda: scenarios.poisoned_feedback_retrain(home, max_share=1.0, task="unguarded"),
            )
            run("Prefect down when drift is detected", lambda: scenarios.prefect_down_during_drift(home))
            run("Prefect down during promote, rollback", lambda: scenarios.prefect_down_during_alias_moves(home))
            if wanted(*(f"MLflow down during {what}" for what in ("predict, feedback, promote", "monitor", "retrain"))):
                _run_mlflow_outages(Path(root) / "remote", run)
            if wanted(*(f"S3 down during {what}" for what in ("predict, feedback, promote", "monitor", "retrain"))):
                _run_s3_outages(Path(root) / "s3", run)
    scenarios.print_table(outcomes)
    if args.json:
        args.json.write_text(json.dumps([o.row() for o in outcomes], indent=2, default=str))
    return 0 if outcomes and all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
