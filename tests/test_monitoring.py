"""Specification of drift monitoring: real Evidently, real base-model embeddings, real windows of movie reviews."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prefix_registry.errors import ConfigError
from prefix_registry.monitoring.drift import DriftVerdict, DriftWindow, SignalResult, detect_drift
from prefix_registry.monitoring.drift_config import DriftConfig
from prefix_registry.monitoring.drift_runs import (
    STATUS_TAG,
    VERDICT_TAG,
    latest_drift_episode,
    monitoring_runs,
    read_verdict,
)
from prefix_registry.monitoring.monitor import MonitorRequest, _text_models, run_monitor
from prefix_registry.monitoring.text_features import OovRate, sentence_embeddings
from prefix_registry.registry.loading import load_version
from prefix_registry.registry.runs import RecordedRun
from prefix_registry.registry.store import ExperimentPurpose, PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.settings import Settings
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.traffic.prediction_records import PredictionRecord
from tests.conftest import tiny_config, tiny_data
from tests.servers.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="module")
def text_models(module_home: Path):
    (model, tokenizer), oov = _text_models("minilm", str(Settings().resolved_cache_dir))
    return oov, lambda texts: sentence_embeddings(model, tokenizer, texts)


def _window(
    frame: pd.DataFrame, predicted: list[str] | None = None, confidence: np.ndarray | None = None, labelled: bool = True
) -> DriftWindow:
    rng = np.random.default_rng(len(frame))
    return DriftWindow(
        pd.DataFrame(
            {
                "text": frame["text"].tolist(),
                "predicted_label": predicted if predicted is not None else frame["label"].tolist(),
                "confidence": confidence if confidence is not None else rng.uniform(0.5, 1.0, len(frame)),
                "true_label": frame["label"].tolist() if labelled else [None] * len(frame),
            }
        ),
        kind="test",
    )


@pytest.fixture(scope="module")
def windows() -> dict[str, pd.DataFrame]:
    rt = tiny_data(limit=8530).frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    imdb = tiny_data(limit=400, source="imdb").frame
    return {"reference": rt.iloc[:400], "rt": rt.iloc[400:700], "rt2": rt.iloc[700:1000], "imdb": imdb}


def _check(reference: DriftWindow, current: DriftWindow, text_models, **config):
    oov, embed = text_models
    return detect_drift("t", "1", reference, current, DriftConfig(**config), oov, embed).verdict


def test_clean_traffic_raises_no_alarm(windows, text_models) -> None:
    verdict = _check(_window(windows["reference"]), _window(windows["rt"]), text_models)
    assert verdict.status == "ok" and not verdict.drift_detected and verdict.drifted_signals == []
    assert set(verdict.signals) == {
        "text_length",
        "oov_rate",
        "embedding",
        "predicted_label",
        "confidence",
        "accuracy_drop",
    }
    for signal in verdict.signals.values():
        assert signal.score < signal.threshold, signal
    assert verdict.to_dict()["window_sizes"] == {"reference": 400, "current": 300}


def test_a_shift_to_imdb_reviews_is_input_drift(windows, text_models) -> None:
    verdict = _check(_window(windows["reference"]), _window(windows["imdb"]), text_models)
    assert verdict.drift_detected and verdict.status == "drift"
    assert {"text_length", "oov_rate", "embedding"} <= set(verdict.drifted_signals)
    assert verdict.signals["embedding"].score_kind == "roc_auc" and verdict.signals["embedding"].score > 0.9
    assert verdict.signals["text_length"].method == "wasserstein"
    assert verdict.signals["text_length"].score > 10 * verdict.signals["text_length"].threshold


def test_prediction_and_confidence_drift_on_the_same_inputs(windows, text_models) -> None:
    current = windows["rt"]
    skewed = _window(
        current, predicted=["positive"] * len(current), confidence=np.full(len(current), 0.99), labelled=False
    )
    verdict = _check(_window(windows["reference"]), skewed, text_models)
    assert set(verdict.drifted_signals) == {"predicted_label", "confidence"}
    assert not verdict.signals["embedding"].drifted and not verdict.signals["text_length"].drifted
    assert verdict.quality == {
        "labelled": 0,
        "reference_labelled": 400,
        "reference_accuracy": 1.0,
        "message": "0 feedback label(s); 100 needed to judge accuracy",
    }


def test_live_accuracy_drop_from_feedback_labels(windows, text_models) -> None:
    current = windows["rt2"]
    flipped = ["negative" if label == "positive" else "positive" for label in current["label"]]
    flipped[: len(flipped) // 2] = current["label"].tolist()[: len(flipped) // 2]  # half right, half wrong
    verdict = _check(_window(windows["reference"]), _window(current, predicted=flipped), text_models)
    assert verdict.quality["accuracy"] == pytest.approx(0.5) and verdict.quality["labelled"] == 300
    assert verdict.quality["reference_accuracy"] == 1.0
    assert verdict.signals["accuracy_drop"].drifted and verdict.signals["accuracy_drop"].score == pytest.approx(0.5)


def test_a_labelled_window_against_an_unlabelled_logged_reference_judges_accuracy_without_a_drop(
    windows, text_models
) -> None:
    # Labels arrived for recent traffic only (`--reference-last N` over logged predictions): the live accuracy is
    # judged, and with no labelled reference there is no drop to alarm on (this crashed in Evidently before).
    verdict = _check(_window(windows["rt"], labelled=False), _window(windows["rt2"]), text_models)
    assert verdict.quality["accuracy"] == pytest.approx(1.0) and verdict.quality["labelled"] == 300
    assert verdict.quality["reference_labelled"] == 0 and "reference_accuracy" not in verdict.quality
    assert "accuracy_drop" not in verdict.signals and verdict.status == "ok", verdict.drifted_signals


def test_too_small_a_window_is_insufficient_data_not_an_alarm(windows, text_models) -> None:
    verdict = _check(_window(windows["reference"]), _window(windows["imdb"].iloc[:50]), text_models)
    assert verdict.status == "insufficient_data" and not verdict.drift_detected and verdict.signals == {}
    assert "the current window has 50 row(s)" in verdict.message


def test_oov_rate_counts_words_the_tokenizer_splits() -> None:
    _, oov = _text_models("minilm", str(Settings().resolved_cache_dir))
    rates = oov(["the film was good", "the zxqvw blorptastic film", "", "12 34"])
    assert rates.tolist() == [0.0, 0.5, 0.0, 0.0]
    assert isinstance(oov, OovRate)


def test_drift_config_file_overrides_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "drift.yaml"
    path.write_text("min_window: 50\nsignals:\n  text_length: {method: ks, threshold: 0.01}\n")
    config = DriftConfig.load(path)
    assert config.min_window == 50 and config.signals["text_length"].method == "ks"
    assert config.signals["embedding"].threshold == DriftConfig().signals["embedding"].threshold
    path.write_text("signals:\n  colour: {method: ks, threshold: 0.1}\n")
    with pytest.raises(ConfigError, match=r"unknown signal\(s\) \['colour'\]"):
        DriftConfig.load(path)
    path.write_text("min_window: 3\n")
    with pytest.raises(ConfigError, match="min_window"):
        DriftConfig.load(path)
    with pytest.raises(ConfigError, match="not found"):
        DriftConfig.load(tmp_path / "missing.yaml")


def test_p_value_methods_alarm_below_their_threshold(windows, text_models) -> None:
    oov, embed = text_models
    config = DriftConfig.load(None).model_copy(deep=True)
    config.signals["text_length"].method, config.signals["text_length"].threshold = "ks", 0.001
    verdict = detect_drift(
        "t", "1", _window(windows["reference"]), _window(windows["imdb"]), config, oov, embed
    ).verdict
    signal = verdict.signals["text_length"]
    assert signal.score_kind == "p_value" and signal.score < 0.001 and signal.drifted


@pytest.fixture(scope="module")
def monitored(module_home: Path) -> PrefixRegistry:
    registry = PrefixRegistry(Settings())
    data = tiny_data(limit=1100)  # a validation split of 110 texts: the reference window
    train_and_register(registry, "reviews", data, tiny_config(), promote=True, progress=False)
    return registry


def _log_traffic(registry: PrefixRegistry, log: PredictionLog, frame: pd.DataFrame, labelled: bool) -> float:
    """Log the champion's predictions on `frame` (and the true labels as feedback); returns their accuracy."""
    version = registry.resolve("reviews")
    predictions = load_version(registry, version).predict(frame["text"].tolist())
    records = [
        PredictionRecord.new("reviews", version.version, text, label, dict(zip(predictions.labels, p, strict=True)))
        for text, label, p in zip(frame["text"], predictions.predicted, predictions.probabilities.tolist(), strict=True)
    ]
    log.write(records)
    if labelled:
        for record, truth in zip(records, frame["label"], strict=True):
            log.attach_feedback(record.prediction_id, truth)
    return float(np.mean(np.array(predictions.predicted) == frame["label"].to_numpy()))


def test_monitor_logs_reports_to_mlflow_and_alerts_on_drift(
    monitored: PrefixRegistry, windows, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    log = PredictionLog(monitored.settings.resolved_prediction_log_url)
    empty = run_monitor(monitored, log, MonitorRequest("reviews"), send_alerts=False)
    assert empty.verdict.status == "insufficient_data" and empty.verdict.current["size"] == 0

    accuracy = _log_traffic(monitored, log, windows["rt"].iloc[:150], labelled=True)
    clean = run_monitor(monitored, log, MonitorRequest("reviews", current_last=150))
    assert clean.verdict.status == "ok", clean.verdict.drifted_signals
    assert clean.verdict.reference == {"kind": "champion-validation", "size": 110, "labelled": 110, "version": "1"}
    assert clean.verdict.quality["labelled"] == 150
    assert clean.verdict.quality["accuracy"] == pytest.approx(accuracy)
    run = monitored.run(clean.run_id)
    assert run.data.tags["prefix_registry.kind"] == "monitor" and run.data.tags["prefix_registry.version"] == "1"
    assert run.data.metrics["drift_detected"] == 0.0 and "drift_embedding" in run.data.metrics
    artifacts = set(monitored.gateway.list_artifacts(clean.run_id, "drift"))
    assert {"drift/verdict.json", "drift/drift_report.html", "drift/quality_report.html"} <= artifacts
    assert Path(clean.html_files["drift"]).stat().st_size > 10_000
    assert read_verdict(monitored, clean.run_id) == clean.verdict  # the run keeps the verdict, shape unchanged
    _check_run_reads_as_its_verdict(monitored, clean, step=1)

    _log_traffic(monitored, log, windows["imdb"].iloc[:150], labelled=False)
    secret = "s3cr3t"
    with WebhookReceiver(secret=secret) as receiver:
        monkeypatch.setenv("PREFIX_REGISTRY_ALERT_WEBHOOKS", receiver.url)
        monkeypatch.setenv("PREFIX_REGISTRY_ALERT_SECRET", secret)
        result = cli("monitor", "reviews", "--current-last", "150", "--json", "--fail-on-drift")
        assert result.exit_code == 3, result.stderr
        verdict = result.json()
        assert verdict["drift_detected"] and "embedding" in verdict["drifted_signals"]
        assert verdict["alert"]["deliveries"][0]["delivered"] is True
        assert receiver.wait_for(1)
        alert = receiver.requests[0]
        assert alert.signature_valid and alert.json()["kind"] == "drift_detected"
        assert alert.json()["task"] == "reviews"
        assert alert.json()["details"]["drifted_signals"] == verdict["drifted_signals"]
        assert alert.json()["details"]["monitoring_run_id"] == verdict["mlflow_run_id"]
    drifted = monitored.run(verdict["mlflow_run_id"])
    assert drifted.data.tags["verdict"].startswith("DRIFT in ") and "embedding" in drifted.data.tags["verdict"]
    assert drifted.data.tags["mlflow.note.content"] == drifted.data.tags["verdict"]
    log.close()


def _check_run_reads_as_its_verdict(registry: PrefixRegistry, outcome, step: int) -> None:
    """Name, one-line verdict, thresholds, stepped and time-stamped scores, and a report holding every signal."""
    verdict = outcome.verdict
    run = registry.run(outcome.run_id)
    start, end = (datetime.fromisoformat(verdict.current[key]) for key in ("from", "to"))
    window = f"{start:%Y-%m-%d %H:%M:%S} → {end:%H:%M:%S} UTC"
    assert run.info.run_name == f"reviews v1 drift check {window}: no drift (#{step})"
    # Monitoring runs have their own experiment, tagged (as the training one) to open on its runs in MLflow's UI.
    experiment = registry.gateway.experiment(run.info.experiment_id)
    assert experiment.name == "prefix-registry/reviews/monitoring"
    assert run.info.experiment_id == registry.experiment_id("reviews", ExperimentPurpose.MONITORING)
    assert run.info.experiment_id != registry.experiment_id("reviews")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.data.tags["verdict"].startswith("no drift (closest: ")
    assert f"live macro-F1 {verdict.quality['macro_f1']:.3f}" in run.data.tags["verdict"]
    assert (
        run.data.params["threshold.embedding"] == "0.7" and run.data.params["method.embedding"] == "domain_classifier"
    )
    assert run.data.params["threshold.accuracy_drop"] == "0.1"
    end_ms = int(datetime.fromisoformat(verdict.current["to"]).replace(tzinfo=UTC).timestamp() * 1000)
    for key in ("live_accuracy", "live_macro_f1", "drift_embedding", "drift_text_length"):
        (point,) = registry.gateway.metric_history(outcome.run_id, key)
        assert (point.step, point.timestamp) == (step, end_ms), key
    html = Path(outcome.html_files["drift"]).read_text(encoding="utf-8")
    for shown in ("Embedding drift (domain classifier ROC AUC)", f"{verdict.signals['embedding'].score:.3f}"):
        assert shown in html, shown
    assert "first two principal components" in html and "t-SNE" not in html
    macro = f"{verdict.quality['macro_f1']:.3f}"
    for report in ("drift", "quality"):
        page = Path(outcome.html_files[report]).read_text(encoding="utf-8")
        assert "Live macro-F1 (feedback-labelled rows, macro average)" in page and macro in page, report


def test_monitor_with_a_logged_reference_window(monitored: PrefixRegistry, tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}")
    rt = tiny_data(limit=8530).frame.sample(n=400, random_state=3)
    _log_traffic(monitored, log, rt.iloc[:200], labelled=False)
    _log_traffic(monitored, log, rt.iloc[200:], labelled=False)
    outcome = run_monitor(
        monitored, log, MonitorRequest("reviews", current_last=200, reference_last=200), send_alerts=False, record=False
    )
    assert outcome.verdict.reference["size"] == 200 and outcome.verdict.current["size"] == 200
    assert outcome.verdict.status == "ok" and outcome.run_id is None
    json.dumps(outcome.summary())
    log.close()


def test_a_verdict_whose_files_cannot_be_stored_leaves_no_run_that_claims_it(
    monitored: PrefixRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}")
    _log_traffic(monitored, log, tiny_data(limit=8530).frame.sample(n=300, random_state=4), labelled=False)
    request = MonitorRequest("reviews", current_last=150, reference_last=150)

    def artifact_store_down(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("Could not connect to the endpoint URL")  # S3 down behind the tracking store

    with monkeypatch.context() as patch:
        patch.setattr(RecordedRun, "log_json", artifact_store_down)
        with pytest.raises(ConnectionError):
            run_monitor(monitored, log, request, send_alerts=False)
    failed = monitoring_runs(monitored, "reviews", max_results=1)[0]
    assert failed.info.status == "FAILED"
    assert STATUS_TAG not in failed.data.tags and VERDICT_TAG not in failed.data.tags  # not read as judged
    episode = latest_drift_episode(monitored, "reviews")
    assert episode is None or episode.run_id != failed.info.run_id

    again = run_monitor(monitored, log, request, send_alerts=False)  # the store is back: the same window is judged
    recorded = monitored.run(again.run_id)
    assert recorded.info.status == "FINISHED" and recorded.data.tags[STATUS_TAG] == again.verdict.status
    assert read_verdict(monitored, again.run_id) == again.verdict
    log.close()


def test_reference_option_chooses_the_reference_window_and_refuses_contradictions() -> None:
    assert MonitorRequest("reviews").reference == "champion-validation"
    assert MonitorRequest("reviews", reference_last=200).reference == "logged"
    with pytest.raises(ConfigError, match="--reference logged needs --reference-last N"):
        MonitorRequest("reviews", reference="logged")
    with pytest.raises(ConfigError, match="cannot go with champion-validation"):
        MonitorRequest("reviews", reference="champion-validation", reference_last=200)
    with pytest.raises(ConfigError, match="--reference must be champion-validation or logged, got 'last-week'"):
        MonitorRequest("reviews", reference="last-week")


def test_a_verdict_reads_back_as_written_and_alarms_only_where_allowed() -> None:
    quiet = SignalResult("oov_rate", "input", "wasserstein", "distance", 0.5, 0.3, True, False)
    loud = SignalResult("embedding", "input", "domain_classifier", "roc_auc", 0.9, 0.7, True, True)
    calm = SignalResult("confidence", "prediction", "wasserstein", "distance", 0.1, 0.3, False, True)
    verdict = DriftVerdict(
        "reviews", "1", "drift", {"size": 110}, {"size": 150}, signals={s.name: s for s in (quiet, loud, calm)}
    )
    written = json.loads(json.dumps(verdict.to_dict()))

    assert DriftVerdict.from_dict(written) == verdict
    assert written["drifted_signals"] == ["embedding"]
    assert {name: signal["alarm"] for name, signal in written["signals"].items()} == {
        "oov_rate": False,
        "embedding": True,
        "confidence": False,
    }
