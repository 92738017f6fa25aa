"""Regimes: named slots of a task, each with its own prefix lineage (versions, champion, parent, alias history).

A regime `short` of task `sentiment` is the registered model `sentiment.short`, a task in its own right for
everything the registry does (training runs, versions, `champion`, the alias history and its lock, the baseline gate,
monitoring), tagged as belonging to its task:

    sentiment           prefix_registry.regimes = "long,short"     regimes = "long: champion v2; short: champion v1"
    sentiment.short     prefix_registry.regime_of = "sentiment"    prefix_registry.regime = "short"
    sentiment.router    the task's regime router (registry/routers.py)

MLflow's model names take any character but '/' and ':' (an alias URI is `models:/NAME@ALIAS`); a task name is
letters, digits, '.', '_' and '-', and a regime name the same without '.', so `TASK.REGIME` is read one way only. A
task with no regime has none of these tags and behaves as before.

    slot = ensure_regime(registry, "sentiment", "short")     # "sentiment.short"
    regimes_of(registry, "sentiment")                        # ["long", "short"]
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefix_registry.errors import InvalidRegime
from prefix_registry.registry.aliases import CHAMPION

if TYPE_CHECKING:
    from prefix_registry.registry.alias_mover import AliasChange
    from prefix_registry.registry.store import PrefixRegistry

# Checked with fullmatch. No '.', so that `TASK.REGIME` splits at its last dot only.
REGIME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
logger = logging.getLogger(__name__)

ROUTER_SLOT = "router"  # `TASK.router` holds the task's router: no regime may take its name
TAG_REGIMES = "prefix_registry.regimes"  # on the task: its regimes, comma-separated, sorted
TAG_REGIMES_TEXT = "regimes"  # on the task: the regimes and their champions, for a person reading the MLflow UI
TAG_REGIME_OF = "prefix_registry.regime_of"  # on a regime's model: its task
TAG_REGIME = "prefix_registry.regime"  # on a regime's model: its regime name


def validate_regime_name(regime: str) -> str:
    """`regime`, or InvalidRegime naming what a regime name must be."""
    if not REGIME_NAME.fullmatch(regime or "") or regime == ROUTER_SLOT:
        raise InvalidRegime(
            f"invalid regime name {regime!r}: expected 1-32 letters, digits, '_' or '-', starting with a letter or "
            f"digit, other than {ROUTER_SLOT!r}"
        )
    return regime


def regime_model_name(task: str, regime: str) -> str:
    """The registered model holding `regime` of `task`: `TASK.REGIME` (a valid task name, so at most 64 chars)."""
    from prefix_registry.registry.store import TASK_NAME

    validate_regime_name(regime)
    name = f"{task}.{regime}"
    if not TASK_NAME.fullmatch(name):
        raise InvalidRegime(
            f"regime {regime!r} of task {task!r} makes the model name {name!r}: expected at most 64 characters, got "
            f"{len(name)}"
        )
    return name


@dataclass(frozen=True)
class RegimeSlot:
    """One regime of a task: its name, its registered model, and where its champion points (None: not yet)."""

    task: str
    regime: str
    model: str
    champion: str | None
    versions: int

    def summary(self) -> dict[str, Any]:
        return {
            "regime": self.regime,
            "model": self.model,
            "champion": self.champion,
            "versions": self.versions,
        }


def ensure_regime(registry: PrefixRegistry, task: str, regime: str) -> str:
    """Create regime `regime` of `task` (and the task) unless they exist; returns the regime's model name.

    Raises InvalidRegime when the name is invalid or a model of that name exists that is not this regime.
    """
    model_name = regime_model_name(task, regime)
    registry.ensure_task(task)
    if regime_parts(registry, task) is not None:
        raise InvalidRegime(f"task {task!r} is itself a regime; regimes belong to a plain task")
    existing = registry.gateway.task_model(model_name)
    if existing is not None and (existing.tags or {}).get(TAG_REGIME_OF) != task:
        raise InvalidRegime(
            f"cannot make {model_name!r} regime {regime!r} of task {task!r}: a model of that name exists and is "
            f"{_what_model_is(existing)}"
        )
    registry.ensure_task(
        model_name,
        description=f"Regime '{regime}' of task '{task}': its own versions, champion and lineage. "
        f"The task's router (model '{task}.{ROUTER_SLOT}') chooses it per text.",
    )
    registry.set_task_tag(model_name, TAG_REGIME_OF, task)
    registry.set_task_tag(model_name, TAG_REGIME, regime)
    known = set(regimes_of(registry, task))
    if regime not in known:
        registry.set_task_tag(task, TAG_REGIMES, ",".join(sorted(known | {regime})))
    describe_regimes(registry, task)
    return model_name


def regimes_of(registry: PrefixRegistry, task: str) -> list[str]:
    """The task's regimes, sorted; empty for a task without regimes."""
    value = registry.task_tags(task).get(TAG_REGIMES, "")
    return [name for name in value.split(",") if name]


def require_regime(registry: PrefixRegistry, task: str, regime: str) -> str:
    """The model name of an existing regime of `task`; InvalidRegime naming the known ones otherwise."""
    known = regimes_of(registry, task)
    if regime not in known:
        raise InvalidRegime(f"unknown regime {regime!r} of task {task!r}: expected one of {known or 'none yet'}")
    return regime_model_name(task, regime)


def regime_parts(registry: PrefixRegistry, model_name: str) -> tuple[str, str] | None:
    """(task, regime) when `model_name` is a regime's model, else None."""
    model = registry.gateway.task_model(model_name)
    tags = (model.tags or {}) if model is not None else {}
    if TAG_REGIME_OF in tags and TAG_REGIME in tags:
        return tags[TAG_REGIME_OF], tags[TAG_REGIME]
    return None


def regime_slots(registry: PrefixRegistry, task: str) -> list[RegimeSlot]:
    """Every regime of `task` with its champion and version count."""
    slots = []
    for regime in regimes_of(registry, task):
        model_name = regime_model_name(task, regime)
        slots.append(
            RegimeSlot(
                task=task,
                regime=regime,
                model=model_name,
                champion=registry.aliases(model_name).get(CHAMPION),
                versions=len(registry.gateway.task_versions(model_name)),
            )
        )
    return slots


def describe_regimes(registry: PrefixRegistry, task: str) -> str:
    """Write the task's readable `regimes` tag (each regime and its champion) and return it."""
    text = "; ".join(
        f"{slot.regime}: "
        + (f"{CHAMPION} v{slot.champion}" if slot.champion else "no champion yet")
        + f" (model {slot.model})"
        for slot in regime_slots(registry, task)
    )
    registry.set_task_tag(task, TAG_REGIMES_TEXT, text)
    return text


def refresh_on_alias_move(registry: PrefixRegistry, change: AliasChange) -> None:
    """An alias observer: when a regime's champion moved, its task's readable `regimes` tag follows."""
    if change.alias != CHAMPION or "." not in change.task:  # a regime's model is always TASK.REGIME
        return
    try:
        parts = regime_parts(registry, change.task)
        if parts is not None:
            describe_regimes(registry, parts[0])
    except Exception as error:  # the move is made; a stale summary tag must not fail it
        logger.warning("%s: the regimes tag of its task was not refreshed: %s", change.task, error)


def _what_model_is(model: Any) -> str:
    tags = model.tags or {}
    if TAG_REGIME_OF in tags:
        return f"regime {tags.get(TAG_REGIME)!r} of task {tags[TAG_REGIME_OF]!r}"
    return "a task of its own" if tags else "a model of its own"
