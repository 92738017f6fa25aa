"""Task kinds by name: `classification` and `generation` are built in; another kind registers itself from outside.

register_kind(MyKind())   # once, e.g. at import of the module defining it
kind_named("my-kind")     # what a version's recorded kind name resolves to
"""

from __future__ import annotations

from prefix_registry.errors import ConfigError
from prefix_registry.kinds.base import TaskKind
from prefix_registry.kinds.classification import CLASSIFICATION
from prefix_registry.kinds.generation import GENERATION

DEFAULT_KIND = CLASSIFICATION.name  # what a version recorded without a kind is
_BUILT_IN = (CLASSIFICATION.name, GENERATION.name)
_KINDS: dict[str, TaskKind] = {CLASSIFICATION.name: CLASSIFICATION, GENERATION.name: GENERATION}


def register_kind(kind: TaskKind) -> TaskKind:
    """Make `kind` known by its name (registering the same object again is a no-op; another under a taken name is
    refused). Returns `kind`."""
    known = _KINDS.get(kind.name)
    if known is not None and known is not kind:
        raise ConfigError(f"task kind {kind.name!r} is already registered ({type(known).__name__})")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Forget a registered kind (tests that register their own); the built-in kinds stay."""
    if name not in _BUILT_IN:
        _KINDS.pop(name, None)


def kind_named(name: str | None) -> TaskKind:
    """The registered kind called `name`; None or "" is the default kind (versions recorded before kinds existed)."""
    if not name:
        return _KINDS[DEFAULT_KIND]
    try:
        return _KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown task kind {name!r}; known: {', '.join(sorted(_KINDS))}") from None


def kind_names() -> list[str]:
    return sorted(_KINDS)
