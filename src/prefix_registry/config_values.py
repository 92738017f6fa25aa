"""Settings objects built from plain mappings (flow parameters, command-line options), refused in one line, and
the default and help text of each field, for the command-line option that sets it.

A typo'd key or a value out of range becomes a ConfigError naming the known keys or the field, not a traceback.
The settings objects are pydantic models (`RetrainPolicy`) or dataclasses whose fields carry `metadata={"help":
...}` (`TrainConfig`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import Enum
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


def field_default(model: type[Any], name: str) -> Any:
    """The default of one field of a pydantic model or a dataclass, for the command-line option that sets it.

    An enum default comes as its value (`"prefix"`, not `Method.PREFIX`): what a user types and `--help` shows.
    """
    if dataclasses.is_dataclass(model):
        default = _dataclass_field(model, name).default
        if default is dataclasses.MISSING:
            raise ValueError(f"{model.__name__}.{name} has no plain default to show on the command line")
    else:
        default = model.model_fields[name].default
    return default.value if isinstance(default, Enum) else default


def field_help(model: type[Any], name: str) -> str:
    """The description of one field (a dataclass field's `help` metadata): the help text of its option."""
    if dataclasses.is_dataclass(model):
        return str(_dataclass_field(model, name).metadata.get("help") or name)
    return model.model_fields[name].description or name


def _dataclass_field(model: type[Any], name: str) -> dataclasses.Field[Any]:
    fields = {field.name: field for field in dataclasses.fields(model)}
    if name not in fields:
        raise KeyError(f"{model.__name__} has no field {name!r}; fields: {sorted(fields)}")
    return fields[name]
