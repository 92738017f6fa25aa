"""Alias history: who moved an alias, when, from which version to which, and why.

MLflow keeps only an alias's current version. Each move is one row of the project's database
(alias_history_store.py), append-only. Earlier versions stored each move as a registered-model tag
(`prefix_registry.alias_history.000007` -> JSON): those are still read (`history_from_tags`) and merged in, and moved
into the database by the next move. Replaying the history gives the stack of earlier champions that `rollback` walks
back down.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

HISTORY_TAG_PREFIX = "prefix_registry.alias_history."
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias. `from_version` is None when the alias was first set."""

    sequence: int
    alias: str
    action: str  # "promote" or "rollback"
    from_version: str | None
    to_version: str
    actor: str
    at: str
    reason: str | None = None

    @property
    def tag_key(self) -> str:
        """The legacy registered-model tag this entry was stored under by earlier versions."""
        return f"{HISTORY_TAG_PREFIX}{self.sequence:06d}"

    def to_tag_value(self) -> str:
        """The legacy tag value (JSON) of this entry: only tests write it now, to stand for an old registry."""
        return json.dumps(asdict(self), sort_keys=True)


def new_event(
    history: list[AliasEvent],
    alias: str,
    action: str,
    from_version: str | None,
    to_version: str,
    actor: str,
    reason: str | None,
) -> AliasEvent:
    sequence = (history[-1].sequence + 1) if history else 1
    return AliasEvent(
        sequence=sequence,
        alias=alias,
        action=action,
        from_version=from_version,
        to_version=to_version,
        actor=actor,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        reason=reason,
    )


def history_from_tags(tags: Mapping[str, str]) -> list[AliasEvent]:
    """The legacy alias events recorded in a registered model's tags, oldest first (unreadable tags are skipped)."""
    events = []
    for key, value in tags.items():
        if not key.startswith(HISTORY_TAG_PREFIX):
            continue
        try:
            events.append(AliasEvent(**json.loads(value)))
        except (json.JSONDecodeError, TypeError):
            continue
    return sorted(events, key=lambda event: event.sequence)


def alias_stack(history: list[AliasEvent], alias: str) -> list[str]:
    """The versions an alias has pointed to that a rollback can return to, most recent last.

    A promotion pushes its version; a rollback pops back to its target, so rolling back twice walks two steps.
    """
    stack: list[str] = []
    for event in history:
        if event.alias != alias:
            continue
        if event.action == "rollback":
            while stack and stack[-1] != event.to_version:
                stack.pop()
            if not stack:
                stack.append(event.to_version)
        elif not stack or stack[-1] != event.to_version:
            stack.append(event.to_version)
    return stack


def rollback_target(history: list[AliasEvent], alias: str, current: str | None) -> str | None:
    """The version a rollback of `alias` returns to, or None when there is no earlier one."""
    stack = alias_stack(history, alias)
    if current is not None and (not stack or stack[-1] != current):
        stack.append(current)  # the alias was moved outside prefix-registry (e.g. in the MLflow UI)
    return stack[-2] if len(stack) >= 2 else None
