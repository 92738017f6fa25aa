"""An attached prefix: one task version in the form the engine runs, immutable once built.

It holds what a forward pass reads for rows of this version (the virtual tokens, the task head, a trained pooler,
the pooling, the truncation length) and what serving reports about it (method, adapter size, when and how fast it
was attached). Swapping a task to another version is replacing one such value by another: a request that took the
old one keeps it to the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import torch

from prefix_registry.inference.methods import MethodStrategy, PrefixShape, strategy_for
from prefix_registry.inference.precision import Precision
from prefix_registry.kinds.base import TaskKind
from prefix_registry.kinds.classification import CLASSIFICATION
from prefix_registry.training.pooling import Pooling

if TYPE_CHECKING:
    from prefix_registry.inference.resident import ResidentBase


@dataclass(frozen=True)
class GenerationOptions:
    """How a generating prefix decodes a row: at most `max_new_tokens` tokens, greedy unless `do_sample` (then
    sampled from the softmax, reproducibly when `seed` is set: a row's draws depend on its seed alone)."""

    max_new_tokens: int
    do_sample: bool = False
    seed: int | None = None


# eq=False: two versions with equal fields are still two prefixes; the engine groups rows by identity.
@dataclass(frozen=True, eq=False)
class AttachedPrefix:
    """One task version ready to run on a resident base.

    Attributes:
        task, version: what the prefix is in the registry.
        peft_type: PEFT's method name (`PREFIX_TUNING`, `PROMPT_TUNING`, `P_TUNING`), as the adapter config says.
        labels: the task's labels (classification: the classes, in the head's column order).
        max_length: texts are truncated to this many tokens, as in training.
        virtual_tokens: the trained table. Prompt methods: (tokens, hidden), P-tuning's already projected by PEFT;
            prefix tuning: (tokens, layers * 2 * key/value width), PEFT's `get_prompt` layout.
        head: the trained task head (pooled features -> head outputs).
        base: the resident base the prefix runs on.
        prefix_shape: how prefix tuning's table unfolds into per-layer key/values (None for prompt methods).
        pooling: what an encoder's head reads (decoders read the last real token whatever this says).
        pooler: the trained copy of the base's pooler when training included it, else None (the base's own).
        kind: the task kind the version was trained as, which turns its head outputs into predictions (kept here,
            not beside it, so that a swap to a version of another kind stays one reference assignment).
        precision: what its rows' backbone runs at (fp32, bf16, int8); the prefix, pooler and head are float32
            whatever it is. Serving sets it once the version passed its check (registry/precision_check.py).
        instruction: a kind that generates: the instruction template its inputs are read with (None otherwise).
        generation: a kind that generates: how its rows are decoded (the version's defaults, or a request's own
            options set with `with_options`); None for a kind that does not generate.
    """

    task: str
    version: str
    peft_type: str
    labels: list[str]
    max_length: int
    virtual_tokens: torch.Tensor
    head: torch.nn.Module
    base: ResidentBase
    prefix_shape: PrefixShape | None = None
    pooling: Pooling = Pooling.CLS
    pooler: torch.nn.Module | None = None
    kind: TaskKind = CLASSIFICATION
    precision: Precision = Precision.FP32
    adapter_bytes: int = 0
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_seconds: float = 0.0
    instruction: str | None = None
    generation: GenerationOptions | None = None

    def with_options(self, options: GenerationOptions) -> AttachedPrefix:
        """The same version decoding with `options` (a request's own; this value is unchanged)."""
        return replace(self, generation=options)

    def at(self, precision: Precision) -> AttachedPrefix:
        """The same version with its backbone run at `precision` (a new value; this one is unchanged)."""
        return replace(self, precision=precision)

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.virtual_tokens.shape[0])

    @property
    def strategy(self) -> MethodStrategy:
        """How this prefix's virtual tokens enter a forward pass (one strategy per method)."""
        return strategy_for(self.peft_type)

    @property
    def output_width(self) -> int:
        """How many numbers the head gives per text (a linear head's outputs, else one per label)."""
        width = getattr(self.head, "out_features", None)
        return width if isinstance(width, int) else len(self.labels)
