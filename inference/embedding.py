"""The frozen base's sentence embedding as one more kind of row for the engine: no prefix, mean-pooled states.

A router (inference/router.py) reads what the base alone makes of a text. Rather than a second forward path, the
embedding is an `AttachedPrefix` with no virtual tokens, mean pooling and an identity head: its rows go through
`engine.forward` (and serving's batcher) beside any prefix's rows, and come back as the L2-normed mean of the base's
token states (for an encoder; a decoder's backbone reads its last real token, as for its prefixes).

    embedder = frozen_embedder(base, "sentiment.router", "3", max_length=128)
    vectors = sentence_embeddings(embedder, ["great film", "too long"])      # (2, hidden)

`static_embeddings` is the cheap alternative: the L2-normed mean of the base's input token embeddings, no
transformer layer at all. A router on it costs a table lookup instead of a second forward pass of every text (a
prefix changes every layer's states, so the router cannot share the prefixes' pass); it tells apart texts that
differ in kind (vocabulary, length, register) about as well, and meaning-level regimes less well, which is why
`router train` measures both and keeps the static one only when it holds the accuracy (inference/router.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.engine import Row, forward
from prefix_registry.inference.resident import ResidentBase
from prefix_registry.inference.router import RouterFeatures
from prefix_registry.training.evaluation import batch_order
from prefix_registry.training.pooling import Pooling

# The method whose rows enter as input embeddings; with no virtual tokens a row is its text alone.
EMBEDDING_METHOD = "PROMPT_TUNING"


def frozen_embedder(base: ResidentBase, task: str, version: str, max_length: int) -> AttachedPrefix:
    """An attached 'prefix' whose rows give the frozen base's sentence embedding (hidden floats per text)."""
    hidden = int(base.model.config.hidden_size)
    return AttachedPrefix(
        task=task,
        version=version,
        peft_type=EMBEDDING_METHOD,
        labels=[],
        max_length=max_length,
        virtual_tokens=torch.zeros(0, hidden),
        head=torch.nn.Identity(),
        base=base,
        pooling=Pooling.MEAN,
    )


def sentence_embeddings(embedder: AttachedPrefix, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """(len(texts), hidden) embeddings of `texts` through the engine, in batches of similar length."""
    if embedder.num_virtual_tokens != 0:
        raise ValueError(f"expected an embedder with no virtual tokens, got {embedder.num_virtual_tokens}")
    lengths = [len(text) for text in texts]
    found: dict[int, torch.Tensor] = {}
    for indices in batch_order(lengths, batch_size):
        outputs = forward([Row(texts[i], embedder) for i in indices])
        found.update(zip(indices, outputs, strict=True))
    return np.stack([found[i].numpy() for i in range(len(texts))]) if texts else np.zeros((0, 0), np.float32)


@torch.no_grad()
def static_embeddings(base: ResidentBase, texts: Sequence[str], max_length: int) -> np.ndarray:
    """(len(texts), hidden) L2-normed means of each text's input token embeddings (its first `max_length` tokens,
    special tokens included as the base's tokenizer adds them): no transformer layer runs."""
    if not texts:
        return np.zeros((0, 0), np.float32)
    encoded = base.tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    vectors = base.word_embeddings(encoded["input_ids"]).float()
    means = (vectors * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(means, dim=-1).numpy()


def router_inputs(
    features: RouterFeatures, base: ResidentBase, texts: Sequence[str], max_length: int, name: str = "router"
) -> np.ndarray:
    """What a router of `features` reads of `texts` on `base`: static or contextual embeddings (serving computes the
    same, the contextual ones through its batcher)."""
    if features is RouterFeatures.STATIC:
        return static_embeddings(base, texts, max_length)
    return sentence_embeddings(frozen_embedder(base, name, "router", max_length), texts)
