"""One strategy per method: where a prefix's virtual tokens enter the backbone, and in what form.

- prefix tuning: per-layer key/values, read by attention as if earlier tokens had produced them (a cache);
- prompt tuning and P-tuning: embeddings prepended to the text's input embeddings (PEFT saves P-tuning's prompt
  already passed through its encoder, so at inference the two are the same thing).

A strategy turns one prefix's stored table into the tensors one row needs; the engine stacks rows.

    strategy = strategy_for("PREFIX_TUNING")
    strategy.placement is Placement.CACHE
    keys, values = strategy.key_values(table, shape)   # each (layers, heads, tokens, head_dim)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import torch

from prefix_registry.errors import AdapterError


class Placement(StrEnum):
    """Where virtual tokens go in a forward pass."""

    CACHE = "cache"  # key/values every attention layer reads before the text's own
    INPUT = "input"  # embeddings in front of the text's, run through every layer like tokens


@dataclass(frozen=True)
class PrefixShape:
    """How a prefix table unfolds into per-layer key/values (PEFT's `get_prompt` layout)."""

    num_layers: int
    num_heads: int
    head_dim: int


class MethodStrategy(Protocol):
    """What the engine asks of a method."""

    @property
    def peft_type(self) -> str:
        """PEFT's name for the method, as adapter configs store it."""
        ...

    @property
    def placement(self) -> Placement:
        """Where the method's virtual tokens enter a forward pass."""
        ...

    def key_values(self, table: torch.Tensor, shape: PrefixShape | None) -> tuple[torch.Tensor, torch.Tensor]:
        """CACHE methods: keys and values, each (layers, heads, tokens, head_dim)."""
        ...

    def embeddings(self, table: torch.Tensor) -> torch.Tensor:
        """INPUT methods: (tokens, hidden) embeddings to prepend to the text's."""
        ...


@dataclass(frozen=True)
class PrefixTuning:
    """Virtual tokens as key/values in every layer (PEFT's PREFIX_TUNING)."""

    peft_type: str = "PREFIX_TUNING"
    placement: Placement = Placement.CACHE

    def key_values(self, table: torch.Tensor, shape: PrefixShape | None) -> tuple[torch.Tensor, torch.Tensor]:
        if shape is None:
            raise AdapterError("a prefix-tuning adapter needs its layer/head shape; the adapter config has none")
        tokens = table.shape[0]
        expected = shape.num_layers * 2 * shape.num_heads * shape.head_dim
        if table.shape[1] != expected:
            raise AdapterError(
                f"prefix table has {table.shape[1]} columns per token; the shape {shape} needs {expected}"
            )
        unfolded = table.view(tokens, shape.num_layers * 2, shape.num_heads, shape.head_dim)
        # (tokens, 2*layers, heads, head_dim) -> (2*layers, heads, tokens, head_dim); keys and values alternate.
        per_layer = unfolded.permute(1, 2, 0, 3)
        return per_layer[0::2], per_layer[1::2]

    def embeddings(self, table: torch.Tensor) -> torch.Tensor:
        raise AdapterError("prefix tuning has no input embeddings; its virtual tokens are key/values")


@dataclass(frozen=True)
class PromptTuning:
    """Virtual tokens as input embeddings (PEFT's PROMPT_TUNING, and P_TUNING whose saved prompt is projected)."""

    peft_type: str = "PROMPT_TUNING"
    placement: Placement = Placement.INPUT

    def key_values(self, table: torch.Tensor, shape: PrefixShape | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise AdapterError(f"{self.peft_type} has no key/values; its virtual tokens are input embeddings")

    def embeddings(self, table: torch.Tensor) -> torch.Tensor:
        return table


STRATEGIES: dict[str, MethodStrategy] = {
    "PREFIX_TUNING": PrefixTuning(),
    "PROMPT_TUNING": PromptTuning(),
    "P_TUNING": PromptTuning(peft_type="P_TUNING"),
}


def strategy_for(peft_type: str) -> MethodStrategy:
    """The strategy for PEFT's method name; AdapterError naming the supported ones otherwise."""
    strategy = STRATEGIES.get(peft_type)
    if strategy is None:
        raise AdapterError(f"unsupported adapter type {peft_type!r}: expected one of {', '.join(STRATEGIES)}")
    return strategy
