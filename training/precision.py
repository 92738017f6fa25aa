"""The precisions a frozen base computes at on a CPU, and which of them this CPU runs natively.

    fp32  the reference: the base as loaded.
    bf16  torch autocast to bfloat16: about 2x fp32 on a CPU with bf16 instructions (AMX, AVX-512 BF16), slower
          than fp32 where bf16 is emulated.
    int8  serving only (inference/onnx_backbone.py): the backbone exported to ONNX and quantised dynamically.
    auto  a request, never a result: the fastest precision this CPU runs natively that the work allows.

Training (trainer.py) uses fp32 or bf16; serving (inference/precision.py) adds int8. One enum for both, so a
version's training precision and its serving precision read alike.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from prefix_registry.errors import ConfigError


class Precision(StrEnum):
    """How a version's backbone computes; AUTO is a request, never what a version serves at."""

    FP32 = "fp32"
    BF16 = "bf16"
    INT8 = "int8"
    AUTO = "auto"


# Fastest first: the order `auto` tries, and the way up when a version fails a check.
BY_SPEED = (Precision.INT8, Precision.BF16, Precision.FP32)
CHOICES = ", ".join(precision.value for precision in Precision)

# /proc/cpuinfo flags (x86 `flags`, Arm `Features`) that make each precision fast.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})
INT8_FLAGS = frozenset({"amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "asimddp"})


def parse_precision(value: str | Precision) -> Precision:
    """`value` as a Precision; ConfigError naming the choices otherwise."""
    try:
        return Precision(str(value).strip().lower())
    except ValueError:
        raise ConfigError(f"unknown precision {value!r}: expected one of {CHOICES}") from None


@dataclass(frozen=True)
class CpuSupport:
    """Which low precisions this CPU runs natively (instructions, not just correctness: every precision runs
    anywhere, an unsupported one only slowly)."""

    bf16: bool
    int8: bool
    flags: frozenset[str] = frozenset()

    @classmethod
    def detect(cls, cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuSupport:
        """From the CPU's flags (Linux); where there are none to read, no low precision is taken for native."""
        flags: set[str] = set()
        try:
            for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    flags.update(value.split())
        except OSError:
            flags = set()
        found = frozenset(flags & (BF16_FLAGS | INT8_FLAGS))
        return cls(bf16=bool(found & BF16_FLAGS), int8=bool(found & INT8_FLAGS), flags=found)

    def supports(self, precision: Precision) -> bool:
        """Whether `precision` runs natively here (fp32 always does; AUTO is no precision)."""
        return {Precision.FP32: True, Precision.BF16: self.bf16, Precision.INT8: self.int8}.get(precision, False)

    @property
    def name(self) -> str:
        """A short name of what the low precisions run on, kept with a version's check (e.g. `amx_int8+amx_bf16`)."""
        return "+".join(sorted(self.flags)) or "plain"


# What training can run at: int8 is a serving precision (a quantised backbone has no gradients to give).
TRAINING_PRECISIONS = (Precision.FP32, Precision.BF16, Precision.AUTO)


def training_precision(value: str | Precision) -> Precision:
    """`value` checked as a training precision (fp32, bf16 or auto); ConfigError otherwise."""
    precision = parse_precision(value)
    if precision not in TRAINING_PRECISIONS:
        choices = ", ".join(p.value for p in TRAINING_PRECISIONS)
        raise ConfigError(f"training precision must be one of {choices}; got {value!r} (int8 is for serving only)")
    return precision


def training_precision_name(value: str | Precision) -> str:
    """`value` checked as a training precision, as the string a TrainConfig keeps."""
    return training_precision(value).value


def resolve_training_precision(value: str | Precision, cpu: CpuSupport | None = None) -> Precision:
    """The precision a training run computes at: auto becomes bf16 where this CPU has bf16 instructions, else fp32."""
    precision = training_precision(value)
    if precision is not Precision.AUTO:
        return precision
    return Precision.BF16 if (cpu or CpuSupport.detect()).bf16 else Precision.FP32


def computing_at(precision: Precision, device: str = "cpu") -> AbstractContextManager[object]:
    """A context in which the base's forward (and so its backward) runs at `precision`: bf16 autocast, or nothing.
    Parameters stay float32 either way; only the autocast ops (matmuls, linear layers) compute in bfloat16."""
    if precision is Precision.BF16:
        import torch  # here, not at the top: TrainConfig imports this module, and `prefixctl --help` loads no torch

        return torch.autocast(device, dtype=torch.bfloat16)
    if precision is Precision.FP32:
        return nullcontext()
    raise ConfigError(f"cannot compute at {precision.value!r} here: expected fp32 or bf16")
