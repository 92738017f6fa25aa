"""Dropout while training: cheap masks on CPUs, and attention-probability dropout off unless asked for.

PyTorch draws a CPU dropout mask one random number per element (`bernoulli_`), which costs more than the matmuls
around it on small models: profiled on MiniLM prefix training it was ~10 % of a step for the hidden-state dropouts,
and attention-probability dropout, which the fused attention kernel cannot apply, cost another ~20 % on 128-token
texts. Here one 64-bit draw yields four 15-bit uniform numbers, each compared with a threshold, so a mask is
Bernoulli(1 - p) up to p's rounding to 1/32768. Training draws the same kind of mask as before, only from fewer
random words: it is the same regularisation, not a different recipe.

Attention-probability dropout is off by default (`TrainConfig.attention_dropout`): it keeps SDPA off its fused kernel,
and on larger test sets than the benchmark's its absence changed macro-F1 by -0.5 to +0.3 points
(docs/experiments.md, "Training time"). `training_dropout(model, ...)` swaps all this in for the duration of a
training loop and puts everything back afterwards, so a saved or served model is untouched. Cheap masks apply on
CPUs only: accelerators' own dropout kernels are fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PretrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

CHEAP_ATTENTION = "prefix_registry_cheap_dropout"
NO_ATTENTION_DROPOUT = "prefix_registry_no_attention_dropout"
UNIFORM_BITS = 15  # the top 16-bit lane of a non-negative int64 draw has 15 random bits; all lanes keep 15
LEVELS = 1 << UNIFORM_BITS


def drop_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A boolean CPU tensor of `shape` whose elements are True (dropped) with probability p (rounded to 1/32768)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_()  # non-negative: [0, 2**63)
    lanes = words.view(torch.int16)[:count].view(shape)
    return lanes.bitwise_and_(LEVELS - 1) < round(p * LEVELS)


def drop(tensor: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout of `tensor` with a cheap mask: zero with probability p, scale the rest by 1 / (1 - p)."""
    if p == 0.0:
        return tensor
    return tensor.masked_fill(drop_mask(tensor.shape, p), 0.0) * (1.0 / (1.0 - p))


class CheapDropout(nn.Dropout):
    """`nn.Dropout` with `drop_mask` masks (CPU only; the caller decides where it runs)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return input
        return drop(input, self.p)


def cheap_dropout_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention whose probability dropout uses `drop_mask`; without dropout (evaluation) the fused SDPA kernel.

    Grouped-query attention and causal attention without an explicit mask go to SDPA unchanged (its dropout then).
    """
    causal_unmasked = attention_mask is None and getattr(module, "is_causal", False)
    if dropout == 0.0 or not module.training or key.shape[1] != query.shape[1] or causal_unmasked:
        dropout = dropout if module.training else 0.0
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask
    # Dropped and unscaled; the 1 / (1 - p) goes on the output, which is smaller than the weights when the
    # sequence is longer than a head.
    weights = torch.softmax(scores, dim=-1).masked_fill(drop_mask(scores.shape, dropout), 0.0)
    output = torch.matmul(weights, value) * (1.0 / (1.0 - dropout))
    return output.transpose(1, 2).contiguous(), None


def attention_without_dropout(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA attention with its probability dropout off, so the fused kernel runs while training too."""
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0, **kwargs)


for _name, _forward in ((CHEAP_ATTENTION, cheap_dropout_attention), (NO_ATTENTION_DROPOUT, attention_without_dropout)):
    AttentionInterface.register(_name, _forward)
    AttentionMaskInterface.register(_name, sdpa_mask)


@contextmanager
def training_dropout(model: nn.Module, cheap_masks: bool = True, attention_dropout: bool = True) -> Iterator[None]:
    """Inside the block, `model` trains with the dropout asked for; on exit everything is as before.

    Args:
        cheap_masks: on CPU, every `nn.Dropout` and the SDPA attention's probability dropout draw `drop_mask` masks.
        attention_dropout: False runs SDPA attention without probability dropout (the fused kernel, on any device);
            the hidden-state dropouts stay.
    """
    on_cpu = all(param.device.type == "cpu" for param in model.parameters())
    swapped: list[tuple[nn.Module, str, nn.Dropout]] = []
    if cheap_masks and on_cpu:
        for parent in model.modules():
            for name, child in list(parent.named_children()):
                if type(child) is nn.Dropout and child.p > 0.0:
                    replacement = CheapDropout(child.p)
                    replacement.train(child.training)
                    setattr(parent, name, replacement)
                    swapped.append((parent, name, child))
    attention = NO_ATTENTION_DROPOUT if not attention_dropout else CHEAP_ATTENTION if cheap_masks and on_cpu else None
    configs: list[PretrainedConfig] = [
        config
        for config in {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values()
        if attention is not None and isinstance(config, PretrainedConfig) and config._attn_implementation == "sdpa"
    ]
    for config in configs:
        config._attn_implementation = attention
    try:
        yield
    finally:
        for config in configs:
            config._attn_implementation = "sdpa"
        for parent, name, original in swapped:
            original.train(parent.training)
            setattr(parent, name, original)
