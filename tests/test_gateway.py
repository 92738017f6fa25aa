"""Specification of the MLflow gateway: the only module that talks to MLflow, translating its errors once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from prefix_registry.errors import RegistryError, RegistryUnavailable
from prefix_registry.registry.gateway import MlflowGateway, RunStatus
from prefix_registry.settings import Settings
from tests.package_layout import source_folders

ROOT = Path(__file__).resolve().parents[1]
# Every folder of the import root (see pyproject's package-dir), and the benchmarks.
SOURCE_FOLDERS = (*source_folders(), "bench")
GATEWAY = ROOT / "registry" / "gateway.py"


def mlflow_uses(source: str) -> list[str]:
    """What in `source` reaches MLflow around the gateway: an `mlflow` import, `MlflowClient`, a `.client`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "mlflow"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            found.append(f"from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Attribute) and node.attr in ("client", "MlflowClient"):
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id == "MlflowClient":
            found.append(f"line {node.lineno}: MlflowClient")
    return found


def test_the_check_finds_each_way_around_the_gateway() -> None:
    source = "import mlflow.tracking\nfrom mlflow import MlflowClient\nregistry.client.get_run('x')\n"
    assert mlflow_uses(source) == [
        "import mlflow.tracking",
        "from mlflow import MlflowClient",
        "line 3: .client",
    ]
    assert mlflow_uses("from prefect.client.orchestration import get_client\nself._client()\n") == []


def test_no_module_but_the_gateway_imports_mlflow_or_reaches_its_client() -> None:
    files = [path for folder in SOURCE_FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))]
    assert GATEWAY in files and len(files) > 100  # the folders are where this test thinks they are
    offenders = {
        str(path.relative_to(ROOT)): uses
        for path in files
        if path != GATEWAY and (uses := mlflow_uses(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
    assert mlflow_uses(GATEWAY.read_text(encoding="utf-8"))  # and the gateway does


def _failing(monkeypatch: pytest.MonkeyPatch, method: str, error: Exception) -> None:
    from mlflow import MlflowClient

    def fail(*_args: object, **_kwargs: object) -> None:
        raise error

    monkeypatch.setattr(MlflowClient, method, fail)


def test_an_unreachable_tracking_server_is_one_registry_unavailable_line(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    gateway = MlflowGateway(Settings())
    _failing(monkeypatch, "get_run", MlflowException("API request to http://127.0.0.1:9 failed: Max retries"))
    with pytest.raises(RegistryUnavailable) as raised:
        gateway.run("abc")
    assert str(raised.value) == (
        f"MLflow at {gateway.settings.resolved_tracking_uri} is unreachable while trying to read run abc"
    )


def test_not_found_is_a_registry_error_naming_the_action(home: Path) -> None:
    gateway = MlflowGateway(Settings())
    with pytest.raises(RegistryError, match=r"^read run 0123456789abcdef: not found \("):
        gateway.run("0123456789abcdef")


def test_other_mlflow_errors_pass_unchanged(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    error = MlflowException("INTERNAL_ERROR: boom", error_code="INTERNAL_ERROR")
    _failing(monkeypatch, "search_registered_models", error)
    with pytest.raises(MlflowException) as raised:
        MlflowGateway(Settings()).task_models()
    assert raised.value is error


def test_ping_turns_any_failure_into_registry_unavailable(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, "search_experiments", ConnectionError("refused"))
    gateway = MlflowGateway(Settings())
    with pytest.raises(RegistryUnavailable, match=r"is unreachable: refused$"):
        gateway.ping()


def test_a_missing_task_or_version_reads_as_none_and_creating_a_task_twice_keeps_the_first(home: Path) -> None:
    gateway = MlflowGateway(Settings())
    assert gateway.task_model("absent") is None
    gateway.create_task_model("kept", {"prefix_registry.task": "true"}, "first")
    gateway.create_task_model("kept", {"prefix_registry.task": "true"}, "second")
    assert gateway.task_model("kept").description == "first"
    assert gateway.model_version("kept", "1") is None
    created = gateway.create_version("kept", "s3://nowhere/adapter", None, {"k": "v"}, "v1")
    assert (str(created.version), gateway.model_version("kept", "1").tags) == ("1", {"k": "v"})
    assert [m.name for m in gateway.task_models()] == ["kept"]


def test_runs_take_params_metrics_tags_and_text_and_end_with_a_status(home: Path) -> None:
    gateway = MlflowGateway(Settings())
    experiment = gateway.task_experiment_id("runs")
    assert gateway.task_experiment_id("runs") == experiment
    run_id = gateway.create_run(experiment, "first", {"kind": "train"}).info.run_id
    gateway.log_params(run_id, {f"p{i}": str(i) for i in range(150)})  # more than one batch
    gateway.log_metrics(run_id, {"loss": 0.5}, step=3, timestamp_ms=1_000)
    gateway.set_run_tags(run_id, {"note": "hello"})
    gateway.log_text(run_id, "{}", "out/result.json")
    gateway.end_run(run_id, RunStatus.KILLED)
    run = gateway.run(run_id)
    assert len(run.data.params) == 150 and run.data.params["p149"] == "149"
    assert [(m.value, m.step, m.timestamp) for m in gateway.metric_history(run_id, "loss")] == [(0.5, 3, 1_000)]
    assert run.data.tags["note"] == "hello" and run.info.status == "KILLED"
    assert gateway.list_artifacts(run_id, "out") == ["out/result.json"]
    killed = gateway.search_runs([experiment], "attributes.status = 'KILLED'")
    assert [r.info.run_id for r in killed] == [run_id]
