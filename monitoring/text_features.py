"""Numbers that describe texts for drift checks: out-of-vocabulary rate and sentence embeddings."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from prefix_registry.training.evaluation import batch_order

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)


class OovRate:
    """Share of a text's words that the base tokenizer cannot hold as one token.

    Words a tokenizer knows whole are the vocabulary it was built on; a new domain (names, slang, markup, another
    language) shows up as more words split into pieces.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._known: dict[str, bool] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        words_per_text = [WORD.findall(text.lower()) for text in texts]
        new_words = sorted({w for words in words_per_text for w in words} - set(self._known))
        if new_words:
            # A leading space makes byte-level BPE tokenizers see a word start, as inside running text.
            pieces = self.tokenizer([" " + w for w in new_words], add_special_tokens=False)["input_ids"]
            unknown_id = getattr(self.tokenizer, "unk_token_id", None)
            for word, ids in zip(new_words, pieces, strict=True):
                self._known[word] = len(ids) == 1 and ids[0] != unknown_id
        return np.array(
            [sum(not self._known[w] for w in words) / len(words) if words else 0.0 for words in words_per_text]
        )


@torch.no_grad()
def sentence_embeddings(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int = 128, batch_size: int = 64
) -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden states (all-MiniLM-L6-v2's own sentence embedding)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    vectors: np.ndarray | None = None
    # Batches of similar length: far less padding (half the time on mixed traffic), same vectors.
    for indices in batch_order([len(ids) for ids in encoded], batch_size):
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if vectors is None:
            vectors = np.zeros((len(texts), pooled.shape[-1]), dtype=np.float32)
        vectors[indices] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    assert vectors is not None  # texts is not empty, so at least one batch ran
    return vectors
