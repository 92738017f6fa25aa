"""Deterministic, class-stratified train / validation / test splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from prefix_registry.errors import DataError
from prefix_registry.training.data import LabelledTexts


@dataclass(frozen=True)
class DataSplits:
    """Three disjoint parts of one labelled data set, and the label order shared by all three."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    labels: list[str]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def split_labelled_texts(
    data: LabelledTexts, validation_fraction: float, test_fraction: float, seed: int
) -> DataSplits:
    """Split each class by a seeded permutation, so the same data and seed always give the same split.

    Every class needs at least 3 rows: one for each split.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[pd.DataFrame]] = {"train": [], "validation": [], "test": []}
    for label, group in data.frame.groupby("label", sort=True):
        if len(group) < 3:
            raise DataError(
                f"class {label!r} has {len(group)} row(s) in {data.origin}; each class needs at least 3 "
                "(one each for training, validation and test)"
            )
        order = group.iloc[rng.permutation(len(group))]
        n_test = max(1, round(len(group) * test_fraction))
        n_validation = max(1, round(len(group) * validation_fraction))
        if len(group) - n_test - n_validation < 1:
            n_test, n_validation = 1, 1
        parts["test"].append(order.iloc[:n_test])
        parts["validation"].append(order.iloc[n_test : n_test + n_validation])
        parts["train"].append(order.iloc[n_test + n_validation :])

    def _join(frames: list[pd.DataFrame]) -> pd.DataFrame:
        joined = pd.concat(frames)
        return joined.iloc[rng.permutation(len(joined))].reset_index(drop=True)

    return DataSplits(
        train=_join(parts["train"]),
        validation=_join(parts["validation"]),
        test=_join(parts["test"]),
        labels=data.labels,
    )
