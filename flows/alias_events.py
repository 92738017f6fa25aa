"""Promotions and rollbacks as Prefect events, whoever makes them (CLI, train flow, retrain flow).

`AliasEvents` is an alias observer (like the alerts' `AliasAlerts`): the registry hands it every move after the move
is made. The event is first stored in the home's event outbox (`flows/event_outbox.py`), then emitted, with any
older pending ones, only when the Prefect API answers its health check within a couple of seconds: `prefixctl
rollback` never waits on a Prefect that is down, and an event made during an outage goes out with the next move or
monitoring pass that finds Prefect up. Outside a flow run the events are flushed before returning, so a short CLI
process does not exit with them still queued.
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
        from prefix_registry.flows.event_outbox import EventOutbox, deliver_pending
        from prefix_registry.flows.events import alias_event

        if change.alias in self.quiet_aliases:
            return
        try:
            outbox = EventOutbox.from_settings()
            row_id = outbox.add_alias_event(*alias_event(change))
            sent = deliver_pending(outbox, health_timeout=self.health_timeout)
            if sent:
                _flush_outside_a_run()
        except Exception as error:  # the move is made; an event is not worth failing it
            logger.warning("could not emit the alias event of %s: %s", change.task, error)
            return
        if row_id in sent:
            self.emitted.append(sent[row_id])


def announcing_registry() -> PrefixRegistry:
    """The alerting registry (`alerting_registry()`) whose alias moves are also Prefect events."""
    from prefix_registry.alerts import alerting_registry

    registry = alerting_registry()
    registry.alias_observers.append(AliasEvents())
    return registry


def _flush_outside_a_run(timeout: float = 5.0) -> None:
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.events.worker import EventsWorker

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        EventsWorker.drain_all(timeout=timeout, at_exit=False)
