"""Specification of versions as MLflow models (registry/mlflow_model.py, inference/pyfunc.py): `models:/TASK@champion`
loads with MLflow alone and answers what the server answers; `mlflow models serve` answers the same; versions
registered before are made MLflow models by `prefixctl relog`, their adapters unchanged."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from prefix_registry.errors import AdapterError
from prefix_registry.flows.loopback import HOST, free_ports
from prefix_registry.inference.pyfunc import PyfuncConfig, load_version_model
from prefix_registry.registry.mlflow_model import MODEL_FILE_NAMES
from prefix_registry.registry.runs import RecordedRun
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.registry.verification import verify_versions
from prefix_registry.registry.versions import (
    ADAPTER_DIGEST_TAG,
    MODEL_DIGEST_TAG,
    MODEL_FILES_TAG,
    MODEL_SIGNATURE_TAG,
)
from prefix_registry.serving.app import ServingLimits
from prefix_registry.serving.factory import build_serving_app
from prefix_registry.settings import Settings
from prefix_registry.training.adapter_files import ADAPTER_WEIGHTS
from prefix_registry.training.adapter_integrity import MLFLOW_LOAD_RECORD
from tests.conftest import tiny_config, tiny_data
from tests.servers.mlflow_server import find_mlflow

TASK = "pyfunc"
TEXTS = ["A warm, funny and wise film.", "Tedious and far too long.", "It was fine, I suppose.", "Great!"]
CHAMPION_URI = f"models:/{TASK}@champion"


@pytest.fixture(scope="module")
def registry(module_home: Path) -> PrefixRegistry:
    """One task: v1 trained and registered now (an MLflow model, champion); v2 and v3 the same adapter registered as
    versions were before, v2 with folder digests, v3 from before digests too (legacy)."""
    registry = PrefixRegistry(Settings())
    train_and_register(registry, TASK, tiny_data(), tiny_config(), promote=True, progress=False)
    _register_old_style_copy(registry)
    old = _register_old_style_copy(registry)
    registry.gateway.delete_version_tag(TASK, old, ADAPTER_DIGEST_TAG)
    return registry


def _register_old_style_copy(registry: PrefixRegistry) -> str:
    """v1's adapter files, without MLflow's, in a run of their own, registered with v1's tags less the MLflow
    model's: a version as the registry made them before versions were MLflow models."""
    v1 = registry.version(TASK, "1")
    stored = registry.download_version_folder(v1, "adapter")
    old_tags = {key: value for key, value in v1.tags.items() if key not in (MODEL_DIGEST_TAG, MODEL_FILES_TAG)}
    with tempfile.TemporaryDirectory() as scratch:
        adapter = Path(scratch) / "adapter"
        adapter.mkdir()
        for name in v1.integrity.files:
            shutil.copy2(stored / name, adapter / name)
        with RecordedRun(registry, TASK, "old-style copy of v1", kind="train") as run:
            run.log_artifacts(adapter, "adapter")
        version = registry.register_version(TASK, run.run_id, run.artifact_uri, old_tags, "an old-style version")
    return version.version


def _served(registry: PrefixRegistry, texts: list[str]) -> dict:
    """What the project's own server answers for the champion: `/v1/predict` of the real app."""
    with TestClient(build_serving_app(registry, [TASK], limits=ServingLimits(max_texts=8), watch_interval=None)) as c:
        response = c.post("/v1/predict", json={"task": TASK, "texts": texts})
    assert response.status_code == 200, response.text
    return response.json()


def _served_probabilities(body: dict, labels: list[str]) -> np.ndarray:
    return np.array([[p["probabilities"][label] for label in labels] for p in body["predictions"]])


def _model_probabilities(rows: list[dict], labels: list[str]) -> np.ndarray:
    return np.array([[row[f"prob_{label}"] for label in labels] for row in rows])


# --- a new version is an MLflow model --------------------------------------------------------------------------------


def test_the_champion_loads_in_a_fresh_process_with_mlflow_alone_and_matches_the_server(
    registry: PrefixRegistry, tmp_path: Path
) -> None:
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({CHAMPION_URI!r})\n"
        "frame = model.predict(pd.DataFrame({'text': json.loads(sys.argv[1])}))\n"
        "outputs = model.metadata.get_output_schema().input_names()\n"
        "print(json.dumps({'rows': frame.to_dict(orient='records'), 'columns': list(frame.columns), "
        "'inputs': model.metadata.get_input_schema().input_names(), 'outputs': outputs}))\n"
    )
    # -I: the installed package and the locked environment, nothing from the working folder or PYTHON* variables.
    done = subprocess.run(
        [sys.executable, "-I", "-c", script, json.dumps(TEXTS)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    labels = registry.resolve(TASK).labels
    assert loaded["inputs"] == ["text"]
    assert loaded["columns"] == loaded["outputs"] == ["label", "confidence", *[f"prob_{label}" for label in labels]]
    body = _served(registry, TEXTS)
    served = _served_probabilities(body, labels)
    np.testing.assert_allclose(_model_probabilities(loaded["rows"], labels), served, rtol=0, atol=1e-5)
    assert [row["label"] for row in loaded["rows"]] == [p["label"] for p in body["predictions"]]
    np.testing.assert_allclose([row["confidence"] for row in loaded["rows"]], served.max(axis=1), rtol=0, atol=1e-5)
    # From a local artifact store MLflow loads the registry's own folder in place and writes its load record there:
    # the version still verifies.
    assert (_stored_folder(registry, "1") / MLFLOW_LOAD_RECORD).is_file()
    assert verify_versions(registry, TASK, "1")[0].status == "verified"


def test_mlflow_models_serve_answers_the_champion_with_the_servers_probabilities(
    registry: PrefixRegistry, tmp_path: Path
) -> None:
    labels = registry.resolve(TASK).labels
    with _model_server(tmp_path) as url:
        response = httpx.post(
            f"{url}/invocations",
            json={"dataframe_split": {"columns": ["text"], "data": [[text] for text in TEXTS]}},
            timeout=120,
        )
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    served = _served_probabilities(_served(registry, TEXTS), labels)
    np.testing.assert_allclose(_model_probabilities(rows, labels), served, rtol=0, atol=1e-5)


@contextlib.contextmanager
def _model_server(folder: Path, start_timeout: float = 300.0) -> Iterator[str]:
    """`mlflow models serve --env-manager local -m models:/TASK@champion` on loopback, in a session of its own; yields
    its URL once `/ping` answers, and ends its process group after."""
    mlflow = find_mlflow()
    assert mlflow is not None, "the mlflow command is part of the locked environment"
    port = free_ports()[0]
    command = [
        str(mlflow), "models", "serve", "--env-manager", "local", "-m", CHAMPION_URI,
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # MLflow starts `uvicorn` by name: the one of this environment.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log_file = folder / "serve.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True
        )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            assert process.poll() is None, f"mlflow models serve exited: {log_file.read_text(errors='replace')[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"no /ping answer: {log_file.read_text(errors='replace')[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own group: the CLI and its uvicorn child
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_a_new_version_records_its_mlflow_files_apart_from_its_adapter_and_verifies(
    registry: PrefixRegistry, cli
) -> None:
    v1 = registry.version(TASK, "1")
    assert v1.is_mlflow_model
    assert set(v1.tags[MODEL_FILES_TAG].split(",")) == MODEL_FILE_NAMES
    assert not set(v1.integrity.files) & MODEL_FILE_NAMES  # the adapter's record is its own
    checked = cli("verify", TASK, "1", "--json")
    assert checked.exit_code == 0, checked.stderr
    assert [(c["version"], c["status"]) for c in checked.json()] == [("1", "verified")]


def _stored_folder(registry: PrefixRegistry, version: str) -> Path:
    """The registry's own copy of the version's folder (the artifact store is a local folder here)."""
    return Path(registry.version(TASK, version).source.removeprefix("file://"))


def test_a_changed_mlflow_file_fails_verify(registry: PrefixRegistry, cli) -> None:
    stored = _stored_folder(registry, "1")
    original = (stored / "MLmodel").read_bytes()
    (stored / "MLmodel").write_bytes(original.replace(b"prefix_registry.inference.pyfunc", b"somewhere.else"))
    try:
        checked = cli("verify", TASK, "1", "--json")
    finally:
        (stored / "MLmodel").write_bytes(original)
    assert checked.exit_code == 2
    assert checked.json()[0]["status"] == "FAILED"
    assert "MLflow model files" in checked.json()[0]["detail"]


def test_the_pyfunc_refuses_an_adapter_changed_after_it_was_logged(registry: PrefixRegistry, tmp_path: Path) -> None:
    v1 = registry.version(TASK, "1")
    copy = tmp_path / "model"
    shutil.copytree(registry.download_version_folder(v1, "adapter"), copy)
    config = PyfuncConfig(
        task=TASK,
        run_id=v1.run_id,
        kind=v1.kind.name,
        adapter_digest=str(v1.integrity.digest),
        adapter_files=v1.integrity.files,
    )
    weights = bytearray((copy / ADAPTER_WEIGHTS).read_bytes())
    weights[-1] ^= 0xFF
    (copy / ADAPTER_WEIGHTS).write_bytes(bytes(weights))
    with pytest.raises(AdapterError, match=r"adapter_model\.safetensors is corrupted"):
        load_version_model(copy, config)


# --- versions registered before ---------------------------------------------------------------------------------------


def test_relog_makes_old_versions_mlflow_models_and_leaves_their_adapters_as_they_were(
    registry: PrefixRegistry, cli
) -> None:
    before = {v: registry.version(TASK, v).tags for v in ("2", "3")}
    assert not any(MODEL_DIGEST_TAG in tags for tags in before.values())
    relogged = cli("relog", TASK, "--json")
    assert relogged.exit_code == 0, relogged.stderr
    assert [(r["version"], r["status"]) for r in relogged.json()] == [
        ("1", "already"),
        ("2", "relogged"),
        ("3", "relogged"),
    ]
    for number, tags in before.items():
        after = registry.version(TASK, number).tags
        # Every tag as it was, the MLflow model's three (or two, unsigned) added.
        assert {key: value for key, value in after.items() if key in tags} == tags
        assert set(after) - set(tags) <= {MODEL_DIGEST_TAG, MODEL_FILES_TAG, MODEL_SIGNATURE_TAG}
        assert set(after[MODEL_FILES_TAG].split(",")) == MODEL_FILE_NAMES

    import mlflow.pyfunc

    expected = registry_predictions(registry, "1")
    for number in ("2", "3"):
        frame = mlflow.pyfunc.load_model(f"models:/{TASK}/{number}").predict(pd.DataFrame({"text": TEXTS}))
        np.testing.assert_allclose(frame[expected.columns].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-5)
    checked = cli("verify", TASK, "--json")
    assert [(c["version"], c["status"]) for c in checked.json()] == [
        ("1", "verified"),
        ("2", "verified"),
        ("3", "legacy"),
    ]
    assert [(r["version"], r["status"]) for r in cli("relog", TASK, "3", "--json").json()] == [("3", "already")]


def registry_predictions(registry: PrefixRegistry, version: str) -> pd.DataFrame:
    """The version's probabilities as the registry's loading path computes them (the server's engine)."""
    from prefix_registry.registry.loading import load_version

    predictions = load_version(registry, registry.version(TASK, version)).predict(TEXTS)
    return pd.DataFrame(predictions.probabilities, columns=[f"prob_{label}" for label in predictions.labels])
