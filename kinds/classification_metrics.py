"""Classification metrics: accuracy, macro-F1 and per-class precision / recall / F1, nested and flat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def classification_metrics(
    true_labels: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision / recall / F1 / support.

    `labels` fixes the classes reported (a class absent from both lists still gets a row, with zeros).
    """
    if len(true_labels) != len(predicted):
        raise ValueError(f"expected as many predictions as labels, got {len(predicted)} for {len(true_labels)}")
    labels = list(labels)
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


def flat_metrics(metrics: dict[str, Any], prefix: str, separator: str = "_") -> dict[str, float]:
    """`{prefix}{separator}accuracy`, `...macro_f1` and `...{label}_f1`... as plain floats, for MLflow."""
    flat = {f"{prefix}{separator}accuracy": metrics["accuracy"], f"{prefix}{separator}macro_f1": metrics["macro_f1"]}
    for label, scores in metrics["per_class"].items():
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
        for name in ("precision", "recall", "f1"):
            flat[f"{prefix}{separator}{safe}_{name}"] = scores[name]
    return flat
