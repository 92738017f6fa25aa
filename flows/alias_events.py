"""Promotions and rollbacks as Prefect events, whoever makes them (CLI, train flow, retrain flow).

`AliasEvents` is an alias observer (like the alerts' `AliasAlerts`): the registry hands it every move after the move
is made. It emits only when the Prefect API answers its health check within a couple of seconds, so `prefixctl
rollback` never waits on a Prefect that is down: the move is made and alerted either way, and the event is the
part that is skipped (logged). Outside a flow run the event is flushed before returning, so a short CLI process
does not exit with it still queued.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from prefix_registry.registry.aliases import CHALLENGER
from prefix_registry.registry.store import AliasChange, PrefixRegistry

logger = logging.getLogger(__name__)


class AliasEvents:
    """An alias observer that emits `prefix.model.promoted` / `prefix.model.rolled-back` for each move.

    Args:
        quiet_aliases: aliases whose moves emit nothing (default `challenger`, as for alerts).
        health_timeout: seconds to wait for Prefect's health check before skipping the event.
    """

    def __init__(self, quiet_aliases: Collection[str] = (CHALLENGER,), health_timeout: float = 2.0) -> None:
        self.quiet_aliases = frozenset(quiet_aliases)
        self.health_timeout = health_timeout
        self.emitted: list[str] = []

    def __call__(self, change: AliasChange) -> None:
        from prefix_registry.flows.event_outbox import prefect_reachable
        from prefix_registry.flows.events import emit_alias_event

        if change.alias in self.quiet_aliases:
            return
        if not prefect_reachable(timeout=self.health_timeout):
            logger.info(
                "Prefect API unreachable: no event for %s %s -> v%s", change.task, change.alias, change.to_version
            )
            return
        try:
            event_id = emit_alias_event(change)
            _flush_outside_a_run()
        except Exception as error:  # the move is made; an event is not worth failing it
            logger.warning("could not emit the alias event of %s: %s", change.task, error)
            return
        if event_id:
            self.emitted.append(event_id)


def announcing_registry() -> PrefixRegistry:
    """The alerting registry (`alerting_registry()`) whose alias moves are also Prefect events."""
    from prefix_registry.monitoring.alerts import alerting_registry

    registry = alerting_registry()
    registry.alias_observers.append(AliasEvents())
    return registry


def _flush_outside_a_run(timeout: float = 5.0) -> None:
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.events.worker import EventsWorker

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        EventsWorker.drain_all(timeout=timeout, at_exit=False)
