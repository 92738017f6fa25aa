"""Logistic regression heads chosen on validation macro-F1: the linear probe that both the baseline and the
probe-initialised task head are fitted with."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from prefix_registry.kinds.classification_metrics import classification_metrics

# Inverse regularisation strengths tried; the best on validation macro-F1 is kept.
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class FittedProbe:
    """The chosen logistic regression and how it was chosen."""

    model: LogisticRegression
    c: float
    class_weight: str | None
    validation_macro_f1: float
    validation_by_setting: dict[str, float]

    def class_scores(self, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(weight (n_labels, dim), bias (n_labels,)) giving logits in `labels` order; a binary model's single
        logit is split into two opposite halves (their softmax equals the sigmoid)."""
        coef, intercept = self.model.coef_, self.model.intercept_
        if coef.shape[0] == 1:
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        order = [list(self.model.classes_).index(label) for label in labels]
        return coef[order], intercept[order]


def fit_probe(
    train_x: np.ndarray,
    train_y: list[str],
    validation_x: np.ndarray,
    validation_y: list[str],
    labels: list[str],
    class_weights: tuple[str | None, ...] = (None, "balanced"),
    fit_intercept: bool = True,
) -> FittedProbe:
    """Fit one logistic regression per (C, class weight) and keep the best on validation macro-F1 (the first, i.e.
    the most regularised and unweighted, of equals)."""
    best: FittedProbe | None = None
    scores: dict[str, float] = {}
    if len(set(Counter(train_y).values())) == 1:  # equal classes: "balanced" weights are all 1, the same fit again
        class_weights = tuple(weight for weight in class_weights if weight != "balanced") or (None,)
    for weight in class_weights:
        for c in C_GRID:
            with warnings.catch_warnings():
                # A few unconverged iterations on the weakest C do not change the choice.
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = LogisticRegression(C=c, max_iter=2000, class_weight=weight, fit_intercept=fit_intercept)
                model.fit(train_x, train_y)
            f1 = classification_metrics(validation_y, model.predict(validation_x).tolist(), labels)["macro_f1"]
            scores[f"C={c},class_weight={weight}"] = f1
            if best is None or f1 > best.validation_macro_f1:
                best = FittedProbe(model, c, weight, f1, scores)
    assert best is not None  # the grid is not empty
    return FittedProbe(best.model, best.c, best.class_weight, best.validation_macro_f1, scores)


def probe_summary(probe: FittedProbe) -> dict[str, Any]:
    return {
        "c": probe.c,
        "class_weight": probe.class_weight or "none",
        "validation_macro_f1": probe.validation_macro_f1,
    }
