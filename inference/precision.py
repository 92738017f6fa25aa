"""The precision a version's backbone runs at on a CPU, and what this CPU runs fast.

    fp32  the torch backbone as loaded: the reference every lower precision is checked against.
    bf16  the same torch backbone under `torch.autocast("cpu", bfloat16)`: about 2x fp32 where the CPU has bf16
          instructions (AMX, AVX-512 BF16), slower than fp32 where it has none (then bf16 is emulated).
    int8  the backbone exported once to ONNX and quantised with ONNX Runtime's dynamic int8 (onnx_backbone.py):
          about 4x fp32 with VNNI or AMX int8.
    auto  the fastest of these that this CPU runs natively and the version passes (serving decides, registry
          checks).

Only the backbone changes precision: prefixes (key/values, prompt embeddings), poolers and heads stay float32 and are
fed per row exactly as at fp32, so one resident base serves rows at several precisions in one batch.

A version that loses too much at a precision serves at the next one up:
- asked for int8 or bf16: fp32, the reference. An operator who named a precision chose that trade-off, or none; a
  third precision they did not name would be a surprise (and `int8` failing means fp32, as issue 20 specifies).
- asked for auto: the next faster precision this CPU runs natively, int8 -> bf16 -> fp32. bf16 keeps 8 bits of
  mantissa on every activation where int8 rounds weights and activations to 256 levels, so a version int8 hurts often
  keeps its score in bf16, at about half int8's speed and twice fp32's. bf16 is skipped where the CPU lacks bf16
  instructions (there it is emulated, slower than fp32).

    precision = parse_precision("auto")
    fallbacks(precision, CpuSupport.detect())     # [INT8, BF16, FP32] on a CPU with AMX
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from prefix_registry.training.precision import (
    BF16_FLAGS,
    BY_SPEED,
    CHOICES,
    INT8_FLAGS,
    CpuSupport,
    Precision,
    parse_precision,
)

__all__ = [
    "BF16_FLAGS",
    "BY_SPEED",
    "CHOICES",
    "INT8_FLAGS",
    "BackboneRunner",
    "CpuSupport",
    "Precision",
    "TorchRunner",
    "fallbacks",
    "parse_precision",
]

if TYPE_CHECKING:
    from prefix_registry.inference.backbones import Backbone
    from prefix_registry.inference.batch import StackedBatch


def fallbacks(requested: Precision, cpu: CpuSupport) -> list[Precision]:
    """The precisions to try, in order, for a version asked to serve at `requested`, fp32 last: an explicit one
    then fp32 (tried even where the CPU lacks its instructions: the operator asked for it); AUTO: every precision
    this CPU runs natively, fastest first."""
    if requested is Precision.AUTO:
        return [precision for precision in BY_SPEED if cpu.supports(precision)]
    return [requested] if requested is Precision.FP32 else [requested, Precision.FP32]


class BackboneRunner(Protocol):
    """Runs a resident base's backbone on a stacked batch at one precision; float32 states out."""

    @property
    def precision(self) -> Precision: ...

    def states(self, batch: StackedBatch) -> torch.Tensor:
        """Last hidden states, float32 (rows, input slots, hidden)."""
        ...


@dataclass(frozen=True)
class TorchRunner:
    """The torch backbone at fp32, or under bf16 autocast (states handed back as float32)."""

    backbone: Backbone
    precision: Precision = Precision.FP32

    def states(self, batch: StackedBatch) -> torch.Tensor:
        if self.precision is Precision.FP32:
            return self.backbone.states(batch)
        with torch.autocast(batch.inputs_embeds.device.type, dtype=torch.bfloat16):
            states = self.backbone.states(batch)
        return states.float()
