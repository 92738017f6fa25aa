"""Settings objects built from plain mappings (flow parameters, command-line options), refused in one line.

A typo'd key or a value out of range becomes a ConfigError naming the known keys or the field, not a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from prefix_registry.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)


def from_values(model: type[Model], values: Mapping[str, Any] | None, what: str) -> Model:
    """`model(**values)`, leaving keys set to None at their defaults; raises ConfigError naming `what`.

    Example::

        from_values(RetrainPolicy, {"margin": 0.02}, "retrain policy")
    """
    given = {key: value for key, value in (values or {}).items() if value is not None}
    unknown = sorted(set(given) - set(model.model_fields))
    if unknown:
        raise ConfigError(f"unknown {what} key(s) {unknown}; known: {sorted(model.model_fields)}")
    try:
        return model(**given)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{what} {where}: {first['msg']} (got {first.get('input')!r})") from None


def field_default(model: type[BaseModel], name: str) -> Any:
    """The default of one field, for the command-line option that sets it."""
    return model.model_fields[name].default


def field_help(model: type[BaseModel], name: str) -> str:
    """The description of one field: the help text of the command-line option that sets it."""
    return model.model_fields[name].description or name
