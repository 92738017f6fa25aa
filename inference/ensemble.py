"""An ensemble of versions of one task: the mean of their class probabilities, in one mixed forward pass.

Each text becomes K rows, one per version; the engine runs them together (rows of different prefixes share the
backbone call), each row's softmax is taken and the K are averaged.

    probabilities = ensemble_probabilities([v3, v5, v7], ["great film"])     # (1, n_labels)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.engine import Row, forward
from prefix_registry.kinds.classification import softmax
from prefix_registry.training.evaluation import Predictions, batch_order


def ensemble_probabilities(
    members: Sequence[AttachedPrefix], texts: Sequence[str], batch_size: int = 32
) -> Predictions:
    """The mean of the members' class probabilities per text; members must share their labels, in one order."""
    if not members:
        raise ValueError("an ensemble needs at least one version, got none")
    labels = list(members[0].labels)
    for member in members[1:]:
        if list(member.labels) != labels:
            raise ValueError(
                f"ensemble members must share their labels: expected {labels} (v{members[0].version}), "
                f"got {list(member.labels)} (v{member.version})"
            )
    k = len(members)
    means = np.zeros((len(texts), len(labels)))
    texts_per_batch = max(1, batch_size // k)
    for indices in batch_order([len(text) for text in texts], texts_per_batch):
        rows = [Row(texts[i], member) for i in indices for member in members]
        logits = np.stack([output.numpy() for output in forward(rows)]).reshape(len(indices), k, len(labels))
        means[indices] = softmax(logits.reshape(-1, len(labels))).reshape(len(indices), k, len(labels)).mean(axis=1)
    return Predictions(probabilities=means, labels=labels)
