"""Task kinds: what a prediction is, which metrics judge it, which one decides, which drift signals apply.

The bottom layer: it imports no other layer of the project. See base.py for the seam, classification.py for the
built-in kind, registry.py to register another.
"""

from prefix_registry.kinds.base import (
    TRUE_VALUE,
    Baseline,
    BaselineInputs,
    Direction,
    LoggedPrediction,
    OutputSignal,
    TaskKind,
)
from prefix_registry.kinds.classification import CLASSIFICATION, ClassificationKind, ProbeBaseline
from prefix_registry.kinds.generation import GENERATION, GenerationKind, ZeroShotBaseline
from prefix_registry.kinds.registry import DEFAULT_KIND, kind_named, kind_names, register_kind, unregister_kind

__all__ = [
    "CLASSIFICATION",
    "DEFAULT_KIND",
    "GENERATION",
    "TRUE_VALUE",
    "Baseline",
    "BaselineInputs",
    "ClassificationKind",
    "Direction",
    "GenerationKind",
    "LoggedPrediction",
    "OutputSignal",
    "ProbeBaseline",
    "TaskKind",
    "ZeroShotBaseline",
    "kind_named",
    "kind_names",
    "register_kind",
    "unregister_kind",
]
