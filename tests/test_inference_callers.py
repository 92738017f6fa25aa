"""Specification: every caller reads a version through the one engine, so serving, `evaluate`, the retrain judge
and `compare` give the same numbers for the same version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from prefix_registry.healing.retraining import score
from prefix_registry.kinds.classification import softmax
from prefix_registry.kinds.classification_metrics import classification_metrics
from prefix_registry.registry import loading
from prefix_registry.registry.comparison import compare_versions
from prefix_registry.registry.eval_sets import OWN_TEST
from prefix_registry.registry.loading import LoadedPrefix, load_training_splits, load_version
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.registry.versions import PrefixVersion
from prefix_registry.serving.factory import build_serving_app
from prefix_registry.settings import Settings
from tests.conftest import tiny_config, tiny_data

TASK = "reviews"


@pytest.fixture(scope="module")
def registry(module_home: Path) -> PrefixRegistry:
    """One tiny trained version (P-tuning, [CLS] pooling), the champion."""
    registry = PrefixRegistry(Settings())
    train_and_register(
        registry, TASK, tiny_data(), tiny_config(method="ptuning", pooling="cls"), promote=True, progress=False
    )
    return registry


@pytest.fixture(scope="module")
def version(registry: PrefixRegistry) -> PrefixVersion:
    return registry.resolve(TASK)


@pytest.fixture(scope="module")
def test_split(registry: PrefixRegistry, version: PrefixVersion) -> tuple[list[str], list[str]]:
    frame = load_training_splits(registry, version)["test"]
    return frame["text"].tolist(), frame["label"].tolist()


@pytest.fixture(scope="module")
def client(registry: PrefixRegistry) -> Iterator[TestClient]:
    with TestClient(build_serving_app(registry, watch_interval=None)) as test_client:
        yield test_client


def _served(client: TestClient, texts: list[str], labels: list[str]) -> np.ndarray:
    rows = []
    for start in range(0, len(texts), 8):
        response = client.post("/v1/predict", json={"task": TASK, "texts": texts[start : start + 8]})
        assert response.status_code == 200, response.text
        rows += [[p["probabilities"][label] for label in labels] for p in response.json()["predictions"]]
    return np.array(rows)


def test_serving_evaluate_and_the_pool_give_the_same_probabilities(
    client: TestClient, registry: PrefixRegistry, version: PrefixVersion, test_split: tuple[list[str], list[str]]
) -> None:
    texts, _ = test_split
    evaluated = load_version(registry, version).predict(texts)
    served = _served(client, texts, evaluated.labels)
    table = client.app.state.table  # type: ignore[attr-defined]
    pooled = table.pool.predict(table.current(TASK), texts)
    assert len(texts) >= 8 and evaluated.probabilities.shape == (len(texts), 2)
    np.testing.assert_allclose(served, evaluated.probabilities, atol=1e-6, rtol=0)
    np.testing.assert_allclose(pooled.probabilities, evaluated.probabilities, atol=1e-6, rtol=0)
    assert not np.allclose(evaluated.probabilities[:, 0], evaluated.probabilities[0, 0])  # texts are told apart


def test_the_retrain_judge_and_compare_score_what_serving_answers(
    client: TestClient,
    registry: PrefixRegistry,
    version: PrefixVersion,
    test_split: tuple[list[str], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts, true_labels = test_split
    labels = load_version(registry, version).labels
    served = _served(client, texts, labels)
    served_metrics = classification_metrics(true_labels, [labels[i] for i in served.argmax(axis=1)], labels)

    judged: list[np.ndarray] = []
    predict_outputs = LoadedPrefix.predict_outputs

    def recording(self: LoadedPrefix, *args: object, **kwargs: object) -> np.ndarray:
        judged.append(predict_outputs(self, *args, **kwargs))  # type: ignore[arg-type]
        return judged[-1]

    monkeypatch.setattr(loading.LoadedPrefix, "predict_outputs", recording)
    scores = score(registry, version, {OWN_TEST: load_training_splits(registry, version)["test"]})
    (judge_logits,) = judged
    np.testing.assert_allclose(softmax(judge_logits), served, atol=1e-6, rtol=0)
    assert scores[OWN_TEST] == served_metrics

    # compare reads the metrics recorded at registration: scored by the engine, from the adapter files written.
    comparison = compare_versions(registry, TASK, version.version, version.version)
    recorded = {(row.set, row.metric): row.a for row in comparison.rows}
    # Version metrics are kept to 4 decimals; one text scored differently moves them by far more than that.
    assert recorded[(OWN_TEST, "macro_f1")] == pytest.approx(served_metrics["macro_f1"], abs=5e-5)
    assert recorded[(OWN_TEST, "accuracy")] == pytest.approx(served_metrics["accuracy"], abs=5e-5)
