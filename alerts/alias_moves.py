"""Alias moves that notify: the one place where a promotion or a rollback becomes an alert.

The registry layer cannot import monitoring, so it does not send alerts itself: every `promote` and `rollback` of a
`PrefixRegistry` hands its `AliasChange` to the observers the registry was given. `alerting_registry()` is the
registry every command and flow opens, with `AliasAlerts` as its observer, so `prefixctl promote`, `train
--promote`, the train flow and a retrain promotion all alert the same way, and no caller sends alerts itself.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from prefix_registry.alerts.builders import alert_alias_change
from prefix_registry.alerts.server_push import AliasPush
from prefix_registry.registry.aliases import CHALLENGER
from prefix_registry.registry.store import AliasChange, PrefixRegistry

if TYPE_CHECKING:
    from prefix_registry.settings import Settings


class AliasAlerts:
    """An alias observer that sends a promotion or rollback alert for each move.

    Args:
        settings: where the webhooks are configured.
        quiet_aliases: aliases whose moves send nothing. By default `challenger`: it serves no traffic, and the
            retrain that sets it sends its own decision alert.
    """

    def __init__(self, settings: Settings, quiet_aliases: Collection[str] = (CHALLENGER,)) -> None:
        self.settings = settings
        self.quiet_aliases = frozenset(quiet_aliases)

    def __call__(self, change: AliasChange) -> None:
        if change.alias in self.quiet_aliases:
            return
        alert_alias_change(change, settings=self.settings)


def alerting_registry(settings: Settings | None = None) -> PrefixRegistry:
    """A registry whose alias moves are pushed to the running servers (server_push.py), then send alerts (through
    the durable outbox when webhooks are configured)."""
    registry = PrefixRegistry(settings)
    registry.alias_observers.append(AliasPush(registry.settings))  # first: servers swap before alerts go out
    registry.alias_observers.append(AliasAlerts(registry.settings))
    return registry
