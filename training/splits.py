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


def split_pairs(data: LabelledTexts, validation_fraction: float, test_fraction: float, seed: int) -> DataSplits:
    """(input, target) pairs split by one seeded permutation (targets are texts, not classes: nothing to stratify);
    at least one row in each split. `labels` is empty."""
    if len(data) < 3:
        raise DataError(
            f"{data.origin} has {len(data)} row(s); at least 3 are needed (one each for training, validation and test)"
        )
    order = data.frame.iloc[np.random.default_rng(seed).permutation(len(data))].reset_index(drop=True)
    n_test = max(1, round(len(order) * test_fraction))
    n_validation = max(1, round(len(order) * validation_fraction))
    if len(order) - n_test - n_validation < 1:
        n_test, n_validation = 1, 1
    return DataSplits(
        train=order.iloc[n_test + n_validation :].reset_index(drop=True),
        validation=order.iloc[n_test : n_test + n_validation].reset_index(drop=True),
        test=order.iloc[:n_test].reset_index(drop=True),
        labels=[],
    )


def split_for_kind(
    data: LabelledTexts, validation_fraction: float, test_fraction: float, seed: int, generates: bool
) -> DataSplits:
    """Pairs for a kind that generates (`split_pairs`), class-stratified splits otherwise."""
    split = split_pairs if generates else split_labelled_texts
    return split(data, validation_fraction, test_fraction, seed)


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
