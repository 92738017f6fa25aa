"""A task's regime router: a logistic regression on the frozen base's sentence embeddings (inference/embedding.py),
giving each text a probability per regime, and the rule that picks the regime that answers.

    router = RouterModel.fit(embeddings, regime_of_each_text, base="all-MiniLM-L6-v2", max_length=128)
    choices = router.choose(router.probabilities(embeddings))     # [RegimeChoice("short", 0.93, fell_back=False)]

Below `threshold` confidence the `fallback` regime answers instead of the router's pick. The fitted weights are
stored as plain JSON (`to_json` / `from_json`), so a router loads without unpickling anything.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

ROUTER_FILE = "router.json"


class RouterFeatures(StrEnum):
    """What a router reads of a text."""

    CONTEXTUAL = "contextual"  # the base's mean-pooled last states: one forward pass per text
    STATIC = "static"  # the mean of the base's input token embeddings: no forward pass


@dataclass(frozen=True)
class RegimeChoice:
    """Which regime reads one text, the router's confidence in its own pick, and whether the fallback replaced it
    (confidence below the threshold). `confidence` is None when the caller named the regime."""

    regime: str
    confidence: float | None
    fell_back: bool = False


@dataclass(frozen=True, eq=False)
class RouterModel:
    """Regime probabilities from embeddings: softmax(x @ coef.T + intercept), or the sigmoid of a binary fit
    (what scikit-learn's LogisticRegression.predict_proba computes from the same weights).

    Attributes:
        regimes: the regimes, in the column order of `probabilities`.
        coef, intercept: the fitted weights, (1 or n_regimes, hidden) and (1 or n_regimes,).
        fallback: the regime that answers when the router's confidence is below `threshold`.
        base, max_length: the base whose embeddings it reads, and their truncation length.
        accuracy: its accuracy on the held-out split it was measured on (None when unmeasured).
    """

    regimes: tuple[str, ...]
    coef: np.ndarray
    intercept: np.ndarray
    fallback: str
    threshold: float
    base: str
    max_length: int
    accuracy: float | None = None
    features: RouterFeatures = RouterFeatures.CONTEXTUAL

    def __post_init__(self) -> None:
        if len(self.regimes) < 2:
            raise ValueError(f"a router chooses between at least 2 regimes, got {list(self.regimes)}")
        if self.fallback not in self.regimes:
            raise ValueError(f"fallback regime {self.fallback!r} is not one of the regimes {list(self.regimes)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {self.threshold}")

    @classmethod
    def fit(
        cls,
        embeddings: np.ndarray,
        regimes: Sequence[str],
        *,
        base: str,
        max_length: int,
        fallback: str | None = None,
        threshold: float = 0.5,
        seed: int = 0,
        features: RouterFeatures = RouterFeatures.CONTEXTUAL,
    ) -> RouterModel:
        """Fit on embeddings and each one's regime; `fallback` defaults to the most frequent regime."""
        from sklearn.linear_model import LogisticRegression

        names = sorted(set(regimes))
        if len(names) < 2:
            raise ValueError(f"a router needs texts of at least 2 regimes, got {names}")
        model = LogisticRegression(max_iter=1000, random_state=seed).fit(embeddings, list(regimes))
        counts = {name: list(regimes).count(name) for name in names}
        return cls(
            regimes=tuple(str(c) for c in model.classes_),
            coef=np.asarray(model.coef_, dtype=np.float64),
            intercept=np.asarray(model.intercept_, dtype=np.float64),
            fallback=fallback or max(names, key=lambda name: counts[name]),
            threshold=threshold,
            base=base,
            max_length=max_length,
            features=features,
        )

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(texts, regimes) probabilities, rows summing to 1."""
        scores = np.asarray(embeddings, dtype=np.float64) @ self.coef.T + self.intercept
        if scores.shape[1] == 1:  # a binary fit: one score, for the second regime
            second = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1.0 - second, second], axis=1)
        scores = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def choose(self, probabilities: np.ndarray) -> list[RegimeChoice]:
        """The regime per row: the most probable one, or the fallback when its probability is below threshold."""
        choices = []
        for row in probabilities:
            best = int(np.argmax(row))
            confidence = float(row[best])
            if confidence < self.threshold:
                choices.append(RegimeChoice(self.fallback, confidence, fell_back=True))
            else:
                choices.append(RegimeChoice(self.regimes[best], confidence))
        return choices

    def with_threshold(self, threshold: float) -> RouterModel:
        """The same weights with another fallback threshold."""
        return dataclasses.replace(self, threshold=threshold)

    def with_accuracy(self, accuracy: float) -> RouterModel:
        return dataclasses.replace(self, accuracy=accuracy)

    def to_json(self) -> str:
        return json.dumps(
            {
                "regimes": list(self.regimes),
                "coef": self.coef.tolist(),
                "intercept": self.intercept.tolist(),
                "fallback": self.fallback,
                "threshold": self.threshold,
                "base": self.base,
                "max_length": self.max_length,
                "accuracy": self.accuracy,
                "features": self.features.value,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> RouterModel:
        data = json.loads(text)
        return cls(
            regimes=tuple(data["regimes"]),
            coef=np.asarray(data["coef"], dtype=np.float64),
            intercept=np.asarray(data["intercept"], dtype=np.float64),
            fallback=str(data["fallback"]),
            threshold=float(data["threshold"]),
            base=str(data["base"]),
            max_length=int(data["max_length"]),
            accuracy=None if data.get("accuracy") is None else float(data["accuracy"]),
            features=RouterFeatures(
                data.get("features", RouterFeatures.CONTEXTUAL)
            ),  # routers stored before: contextual
        )
