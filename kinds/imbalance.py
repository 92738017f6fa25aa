"""Class weights for the training loss, so that a skewed split does not train a majority-class predictor."""

from __future__ import annotations

import numpy as np
import torch

# A split this skewed makes a plain cross-entropy settle on the majority class (measured: issue 9).
IMBALANCE_RATIO = 1.5


def class_counts(targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows per class index (0 for a class with no rows)."""
    return np.bincount(targets, minlength=n_classes)


def is_imbalanced(counts: np.ndarray) -> bool:
    """Whether the largest class has at least IMBALANCE_RATIO times the rows of the smallest."""
    present = counts[counts > 0]
    return bool(present.size) and present.max() >= IMBALANCE_RATIO * present.min()


def loss_weights(targets: np.ndarray, n_classes: int, mode: str) -> torch.Tensor | None:
    """Per-class weights for cross-entropy, or None for an unweighted loss.

    Balanced weights are n_rows / (n_classes * rows_of_class) (as scikit-learn's "balanced"): every class then
    carries the same total weight, which is what macro-F1 rewards. `auto` uses them only on imbalanced data, so a
    balanced split trains exactly as before. `mode` is a `ClassWeighting` value: auto, balanced or none.
    """
    counts = class_counts(targets, n_classes)
    if mode == "none" or (mode == "auto" and not is_imbalanced(counts)):
        return None
    weights = len(targets) / (n_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)
