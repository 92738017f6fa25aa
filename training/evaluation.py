"""Batched prediction and classification metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from tqdm.auto import tqdm


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
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    probabilities = np.zeros((len(texts), len(labels)), dtype=np.float32)
    batches = batch_order([len(ids) for ids in encoded], batch_size)
    for indices in tqdm(batches, desc="predict", disable=not progress, leave=False):
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt")
        logits = forward(dict(batch))
        probabilities[indices] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return Predictions(probabilities=probabilities, labels=labels)


def classification_metrics(true_labels: Sequence[str], predicted: Sequence[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision / recall / F1 / support.

    `labels` fixes the classes reported (a class absent from both lists still gets a row, with zeros).
    """
    if len(true_labels) != len(predicted):
        raise ValueError(f"expected as many predictions as labels, got {len(predicted)} for {len(true_labels)}")
    precision, recall, f1, support = precision_recall_fscore_support(
        true_labels, predicted, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(true_labels, predicted)),
        "macro_f1": float(f1_score(true_labels, predicted, labels=labels, average="macro", zero_division=0)),
        "n": len(true_labels),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
    }


def flat_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """`{prefix}_accuracy`, `{prefix}_macro_f1` and `{prefix}_{label}_f1`... as plain floats, for MLflow."""
    flat = {f"{prefix}_accuracy": metrics["accuracy"], f"{prefix}_macro_f1": metrics["macro_f1"]}
    for label, scores in metrics["per_class"].items():
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
        for name in ("precision", "recall", "f1"):
            flat[f"{prefix}_{safe}_{name}"] = scores[name]
    return flat
