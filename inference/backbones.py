"""One adapter per kind of base: how to run its backbone on a stacked batch, and what its head reads per row.

- `EncoderBackbone` (BERT-style, e.g. MiniLM): the head reads the L2-normed mean of the row's real input states
  (prompt included, as PEFT's mean pooling sees them) or the base's pooler over the row's first input slot (the
  [CLS] token, or a prompt's first virtual token), through the prefix's trained pooler when it has one.
- `DecoderBackbone` (Llama-style, e.g. SmolLM2): the head reads the row's last real input slot.

Both call the backbone without its task head (`model.base_model`) and never change the model: the pooler they apply
is a hook-free copy made once, so prefixes trained with different poolings share the base untouched.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from typing import Any

import torch

from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.batch import StackedBatch
from prefix_registry.training.base_models import LoadedBase
from prefix_registry.training.pooling import Pooling, pooler_of


def plain_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A hook-free, evaluation-mode copy of `module` (PEFT's trained-module wrapper unwrapped to its original)."""
    original = getattr(module, "original_module", None)
    source = original if isinstance(original, torch.nn.Module) else module
    copied = copy.deepcopy(source)
    for sub in copied.modules():
        # The pooling switch of training/pooling.py hooks the pooler; a copy must compute the pooler itself.
        sub._forward_hooks.clear()
        sub._forward_pre_hooks.clear()
    return copied.eval()


class Backbone(ABC):
    """Runs a base's backbone (no task head) on a stacked batch; subclasses say what the head reads per row."""

    def __init__(self, loaded: LoadedBase) -> None:
        # A transformers model: typed as a plain Module, whose attributes torch types as `Tensor | Module`.
        model: Any = loaded.model
        self.backbone: Any = model.base_model
        self.takes_token_types = "token_type_ids" in inspect.signature(self.backbone.forward).parameters

    def states(self, batch: StackedBatch) -> torch.Tensor:
        """Last hidden states, (rows, input slots, hidden)."""
        extra = {}
        if self.takes_token_types:
            # PEFT gives prompt tokens type 0, and the tokenizer gives a single text type 0 throughout.
            extra["token_type_ids"] = torch.zeros_like(batch.position_ids)
        outputs = self.backbone(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            past_key_values=batch.cache,
            use_cache=False,
            **extra,
        )
        return outputs.last_hidden_state

    @abstractmethod
    def features(self, states: torch.Tensor, lengths: torch.Tensor, prefix: AttachedPrefix) -> torch.Tensor:
        """What `prefix`'s head reads for rows of `states` (rows, slots, hidden) with `lengths` real slots."""


class EncoderBackbone(Backbone):
    """BERT-style encoders: mean or [CLS]-pooler pooling per row."""

    def __init__(self, loaded: LoadedBase) -> None:
        super().__init__(loaded)
        pooler = pooler_of(loaded.model)
        self.pooler = plain_copy(pooler) if pooler is not None else None

    def features(self, states: torch.Tensor, lengths: torch.Tensor, prefix: AttachedPrefix) -> torch.Tensor:
        if prefix.pooling is Pooling.MEAN:
            positions = torch.arange(states.shape[1], device=states.device)
            mask = (positions.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)
        pooler = prefix.pooler if prefix.pooler is not None else self.pooler
        return _apply_pooler(pooler, states[:, 0])


class DecoderBackbone(Backbone):
    """Decoder-only models: the last real token, whatever the pooling setting says."""

    def features(self, states: torch.Tensor, lengths: torch.Tensor, prefix: AttachedPrefix) -> torch.Tensor:
        return states[torch.arange(states.shape[0], device=states.device), lengths - 1]


def _apply_pooler(pooler: torch.nn.Module | None, first: torch.Tensor) -> torch.Tensor:
    """BERT's pooler takes the whole sequence and reads its first position; give it that position alone."""
    if pooler is None:
        return first  # an encoder without a pooler: its head reads the first token's state
    return pooler(first.unsqueeze(1))


def backbone_for(loaded: LoadedBase) -> Backbone:
    """The adapter for `loaded`'s kind of base."""
    return DecoderBackbone(loaded) if loaded.ref.is_decoder else EncoderBackbone(loaded)
