"""Classification on top of the engine: head outputs are logits, the classification kind's softmax gives class
probabilities.

The only place in `inference` that assumes a softmax; other task kinds read `engine.forward`/`head_outputs` raw.

    predictions = classify(attached, ["great film"])     # Predictions(probabilities (1, n_labels), labels)
"""

from __future__ import annotations

from collections.abc import Sequence

from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.engine import head_outputs
from prefix_registry.kinds.classification import softmax
from prefix_registry.training.evaluation import Predictions


def classify(prefix: AttachedPrefix, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> Predictions:
    """Class probabilities of `prefix` for `texts` (length-sorted batches through the engine)."""
    logits = head_outputs(prefix, texts, batch_size=batch_size, progress=progress)
    return Predictions(probabilities=softmax(logits.numpy()), labels=list(prefix.labels))
