"""Specification of loading a registered version (registry/loading.py): the one path from the store to a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prefix_registry.registry.loading import load_reference_frame, load_version
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from tests.conftest import tiny_config, tiny_data


# Prefix tuning (per-layer key/values) and P-tuning (an encoder PEFT turns into prompts); prompt tuning's plain
# embeddings load as the simpler case of the second (tests/test_training.py reloads all three from their files).
@pytest.mark.parametrize("method", ["prefix", "ptuning"])
def test_a_registered_version_loads_and_predicts_what_it_predicted_when_trained(home: Path, method: str) -> None:
    registry = PrefixRegistry()
    outcome = train_and_register(registry, "loaded", tiny_data(), tiny_config(method=method), progress=False)
    version = registry.version("loaded", outcome.version)
    # Kept at training time, from the trained model in memory: the validation texts and their probabilities.
    reference = load_reference_frame(registry, version)
    loaded = load_version(registry, version)
    assert loaded.labels == ["negative", "positive"] and loaded.manifest.method == method
    predictions = loaded.predict(reference["text"].tolist())
    kept = reference[[f"prob_{label}" for label in loaded.labels]].to_numpy()
    np.testing.assert_allclose(predictions.probabilities, kept, atol=1e-6)
    assert list(predictions.predicted) == reference["predicted"].tolist()
