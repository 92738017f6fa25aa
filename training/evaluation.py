"""Batched prediction: raw head outputs for any kind, and class probabilities for classification.

The metrics live with the classification kind (kinds/classification_metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from prefix_registry.kinds.classification import softmax

__all__ = ["Predictions", "batch_order", "predict_outputs", "predict_probabilities"]


@dataclass(frozen=True)
class Predictions:
    """Class probabilities for a list of texts; `labels[i]` names column i of `probabilities`."""

    probabilities: np.ndarray  # (n_texts, n_labels)
    labels: list[str]

    @property
    def predicted(self) -> list[str]:
        return [self.labels[i] for i in self.probabilities.argmax(axis=1)]

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)


def batch_order(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), in a stable order."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


@torch.no_grad()
def predict_outputs(
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    tokenizer: Any,
    texts: Sequence[str],
    width: int,
    max_length: int,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Run `forward` (tokenised batch -> head outputs) over `texts` in length-sorted batches; returns the raw head
    outputs (n_texts, width) in the order of `texts`, for the task's kind to read."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    outputs = np.zeros((len(texts), width), dtype=np.float32)
    batches = batch_order([len(ids) for ids in encoded], batch_size)
    for indices in tqdm(batches, desc="predict", disable=not progress, leave=False):
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt")
        outputs[indices] = forward(dict(batch)).float().cpu().numpy()
    return outputs


def predict_probabilities(
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    tokenizer: Any,
    texts: Sequence[str],
    labels: list[str],
    max_length: int,
    batch_size: int = 64,
    progress: bool = False,
) -> Predictions:
    """Run `forward` (tokenised batch -> logits) over `texts` in length-sorted batches; softmax the logits."""
    logits = predict_outputs(forward, tokenizer, texts, len(labels), max_length, batch_size, progress)
    return Predictions(probabilities=softmax(logits), labels=labels)
