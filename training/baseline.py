"""The baseline every version is judged against: a linear probe on the frozen base's mean-pooled embeddings, fitted
on the same split, and the majority-class rate of the test split.

base + splits --measure_baseline--> Baseline (test / validation macro-F1 of the probe, majority rate, seconds)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from prefix_registry.training.base_models import BaseModelRef, load_base_encoder
from prefix_registry.training.evaluation import classification_metrics
from prefix_registry.training.features import mean_pooled_embeddings
from prefix_registry.training.probe import fit_probe
from prefix_registry.training.splits import DataSplits


@dataclass(frozen=True)
class Baseline:
    """What a version has to beat on its own split."""

    probe_test_macro_f1: float
    probe_test_accuracy: float
    probe_validation_macro_f1: float
    majority_class: str
    majority_rate: float  # share of the test split in the most frequent class: a constant predictor's accuracy
    probe_c: float
    probe_class_weight: str
    seconds: float

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def measure_baseline(
    ref: BaseModelRef, splits: DataSplits, max_length: int, batch_size: int = 64, progress: bool = False
) -> Baseline:
    """Fit the linear probe on `splits.train` (C and class weighting chosen on validation macro-F1), score it on
    `splits.test`. The frozen encoder is loaded on its own, so the model being trained is never touched."""
    started = time.perf_counter()
    encoder, tokenizer = load_base_encoder(ref)

    def embed(frame):
        return mean_pooled_embeddings(encoder, tokenizer, frame["text"].tolist(), max_length, batch_size, progress)

    probe = fit_probe(
        embed(splits.train),
        splits.train["label"].tolist(),
        embed(splits.validation),
        splits.validation["label"].tolist(),
        splits.labels,
    )
    test = classification_metrics(
        splits.test["label"].tolist(), probe.model.predict(embed(splits.test)).tolist(), splits.labels
    )
    shares = splits.test["label"].value_counts(normalize=True)
    return Baseline(
        probe_test_macro_f1=test["macro_f1"],
        probe_test_accuracy=test["accuracy"],
        probe_validation_macro_f1=probe.validation_macro_f1,
        majority_class=str(shares.idxmax()),
        majority_rate=float(shares.max()),
        probe_c=probe.c,
        probe_class_weight=probe.class_weight or "none",
        seconds=time.perf_counter() - started,
    )
