"""The baseline every version is judged against, as its kind defines it: for classification a linear probe on the
frozen base's mean-pooled embeddings, fitted on the same split, and the majority-class rate of the test split.

base + splits --measure_baseline--> Baseline (the kind's; None when the kind has none)
"""

from __future__ import annotations

import time

from prefix_registry.kinds import CLASSIFICATION, BaselineInputs, ProbeBaseline, TaskKind
from prefix_registry.kinds import Baseline as KindBaseline
from prefix_registry.training.base_models import BaseModelRef, load_base_encoder
from prefix_registry.training.features import mean_pooled_embeddings
from prefix_registry.training.splits import DataSplits

# The classification kind's baseline, under the name its importers know.
Baseline = ProbeBaseline

__all__ = ["Baseline", "measure_baseline", "measure_kind_baseline"]


def measure_baseline(
    ref: BaseModelRef, splits: DataSplits, max_length: int, batch_size: int = 64, progress: bool = False
) -> ProbeBaseline:
    """The classification baseline: the linear probe of the split (see `measure_kind_baseline`)."""
    baseline = measure_kind_baseline(ref, splits, max_length, batch_size, progress, CLASSIFICATION)
    assert isinstance(baseline, ProbeBaseline)  # the classification kind always fits its probe
    return baseline


def measure_kind_baseline(
    ref: BaseModelRef,
    splits: DataSplits,
    max_length: int,
    batch_size: int = 64,
    progress: bool = False,
    kind: TaskKind = CLASSIFICATION,
) -> KindBaseline | None:
    """Fit `kind`'s baseline on `splits.train` (chosen on validation), score it on `splits.test` (for
    classification: the linear probe, C and class weighting chosen on validation macro-F1). The frozen encoder is
    loaded on its own, so the model being trained is never touched. None when the kind has no baseline."""
    started = time.perf_counter()
    if not kind.has_baseline:
        return None  # the kind has no baseline: nothing to embed
    encoder, tokenizer = load_base_encoder(ref)

    def embed(frame):
        return mean_pooled_embeddings(encoder, tokenizer, frame["text"].tolist(), max_length, batch_size, progress)

    inputs = BaselineInputs(
        train_x=embed(splits.train),
        train_y=splits.train["label"].tolist(),
        validation_x=embed(splits.validation),
        validation_y=splits.validation["label"].tolist(),
        test_x=embed(splits.test),
        test_y=splits.test["label"].tolist(),
        labels=splits.labels,
    )
    return kind.fit_baseline(inputs, started)
