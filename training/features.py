"""Frozen sentence features of a base model: mean-pooled token states, as the linear-probe baseline reads them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from prefix_registry.training.evaluation import batch_order


@torch.no_grad()
def mean_pooled_embeddings(
    encoder: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    batch_size: int,
    progress: bool = False,
) -> np.ndarray:
    """Sentence embeddings, shape (len(texts), hidden): token states averaged over the attention mask, L2-normed
    (as sentence-transformers' all-MiniLM-L6-v2 pools)."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    config: Any = encoder.config  # a transformers PretrainedConfig (torch types Module attributes loosely)
    hidden_size = int(config.hidden_size)
    embeddings = np.zeros((len(texts), hidden_size), dtype=np.float32)
    batches = batch_order([len(ids) for ids in encoded], batch_size)
    for indices in tqdm(batches, desc="embed", disable=not progress, leave=False):
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt")
        states = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        embeddings[indices] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
    return embeddings
