"""The alias mover: points an alias (`champion`, `challenger`) at a version, one move at a time, recorded.

    promote(task, version) / rollback(task) --AliasMover--> AliasChange, told to every observer

A move runs under the task's alias lock (alias_lock.py, across processes): read the alias and its history, decide
the target, write the history entry (a row of the project's database, alias_history_store.py), then the alias.
Entries earlier versions kept as registered-model tags are read too, and moved into the database by the next move.
The entry is written first (committed), so a mover killed between the two writes (failpoint
`alias-move:after-history-entry`) leaves an entry whose alias move is missing; the next move of that alias, in any
process, sees the alias still on the entry's `from_version` and completes it first.
So the alias always ends equal to the last entry, one entry per move. Writes that meet a busy store are retried.
After the move, the model's description shows the history table and a rolled-back version is marked as such.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from prefix_registry.errors import NoRollbackHistory, RegistryError, first_line
from prefix_registry.registry.alias_history_store import AliasHistoryStore, merged_history
from prefix_registry.registry.alias_lock import AliasLock
from prefix_registry.registry.aliases import CHAMPION, AliasEvent, history_from_tags, new_event, rollback_target
from prefix_registry.registry.baseline_gate import admit_champion
from prefix_registry.registry.failpoints import ALIAS_MOVE_AFTER_HISTORY, failpoint
from prefix_registry.registry.gateway import MlflowGateway
from prefix_registry.registry.model_history import with_history
from prefix_registry.registry.version_notes import (
    REPROMOTED_HEADING,
    ROLLBACK_HEADING,
    repromotion_markdown,
    rollback_markdown,
    with_section,
    without_section,
)
from prefix_registry.registry.versions import (
    PROMOTED_THEN_ROLLED_BACK,
    TAG_RETRAIN_DECISION,
    TAG_ROLLED_BACK,
    PrefixVersion,
    RetrainOutcome,
)
from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

# Checked with fullmatch: `$` also matches before a trailing newline.
ALIAS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
WRITE_ATTEMPTS = 4


@dataclass(frozen=True)
class AliasChange:
    """The result of a promotion or rollback, as printed by the CLI."""

    task: str
    alias: str
    from_version: str | None
    to_version: str
    event: AliasEvent

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "actor": self.event.actor,
            "at": self.event.at,
            "reason": self.event.reason,
        }


class TaskCatalog(Protocol):
    """The reads a move checks against (PrefixRegistry answers them): one-line errors for unknown names."""

    def require_task(self, task: str) -> Any: ...

    def version(self, task: str, version: str | int) -> PrefixVersion: ...


class AliasMover:
    """Moves aliases of tasks under a cross-process lock, history first; tells `observers` of each real move.

    Example:
        mover = AliasMover(gateway, registry, settings)
        change = mover.promote("sentiment", "3")  # AliasChange(from_version="2", to_version="3", ...)
        mover.rollback("sentiment")               # back to 2
    """

    def __init__(self, gateway: MlflowGateway, catalog: TaskCatalog, settings: Settings) -> None:
        self.gateway = gateway
        self.catalog = catalog
        self.settings = settings
        # Told of every alias move, after it is made: the layers above send alerts and events without this layer
        # importing them (see alerts/alias_moves.py, flows/alias_events.py).
        self.observers: list[Callable[[AliasChange], None]] = []
        self._lock: AliasLock | None = None
        self._history: AliasHistoryStore | None = None
        # Called with every alias target, under the lock, before anything is written; raises to refuse the move
        # (the registry sets registry/promotion_check.py's: the target must verify and load).
        self.promotion_check: Callable[[PrefixVersion, str], None] | None = None
        # Called after each move (after the lock) with the change, to rewrite what describes the moved versions besides
        # their tags and descriptions (the registry sets comparison_card.py's cards); failures are logged.
        self.describe_cards: Callable[[AliasChange], None] | None = None

    @property
    def lock(self) -> AliasLock:
        """The lock database every promoting process reaches (opened on first use)."""
        if self._lock is None:
            if self.settings.lock_url is None and not (self.settings.prediction_log_url or "").startswith("postgres"):
                self.settings.ensure_home()
            self._lock = AliasLock(self.settings.resolved_lock_url, self.settings.lock_timeout_s)
        return self._lock

    @property
    def history(self) -> AliasHistoryStore:
        """The alias history's database, beside the lock's (opened on first use)."""
        if self._history is None:
            lock = self.lock  # creates the home when the default SQLite store lives there
            self._history = AliasHistoryStore(self.settings.resolved_lock_url, lock.timeout_s)
        return self._history

    def history_of(self, task: str, model: Any) -> list[AliasEvent]:
        """Every recorded move of the task's aliases, oldest first: the database's and any legacy tag entries."""
        return merged_history(history_from_tags(model.tags or {}), self.history.events(task))

    def move_history_out_of_tags(self, task: str, model: Any) -> int:
        """Copy the legacy alias-history tags of `model` into the database, then delete them; returns how many.

        Copied first, deleted after: a mover stopped in between leaves entries in both places, which read as one.
        """
        legacy = history_from_tags(model.tags or {})
        for event in legacy:
            self._with_retry(f"move the alias history of {task}", partial(self.history.append, task, event))
        for event in legacy:
            try:
                self.gateway.delete_task_tag(task, event.tag_key, what=f"delete a legacy history tag of {task}")
            except Exception as error:  # already deleted by another mover, or the store is busy: read as one anyway
                logger.warning("%s: legacy history tag %s kept: %s", task, event.tag_key, first_line(error))
        return len(legacy)

    def promote(
        self,
        task: str,
        version: str | int,
        alias: str = CHAMPION,
        reason: str | None = None,
        actor: str | None = None,
        force: bool = False,
    ) -> AliasChange:
        """Point `alias` at `version` and record the move. Promoting the current version changes nothing.

        A champion must beat its linear-probe baseline unless `force` (with a `reason`): see baseline_gate.py.
        """
        reason = admit_champion(self.catalog.version(task, version), alias, reason, force, self.settings)
        return self.announce(self._move(task, str(version), alias, "promote", reason, actor))

    def rollback(
        self,
        task: str,
        to: str | int | None = None,
        alias: str = CHAMPION,
        reason: str | None = None,
        actor: str | None = None,
    ) -> AliasChange:
        """Move `alias` back to its previous version (or to `to`), recording who, when and why."""

        def choose(current: str | None, history: list[AliasEvent]) -> str:
            # Chosen under the alias lock: two rollbacks at once walk back two steps, not the same one twice.
            target = str(to) if to is not None else rollback_target(history, alias, current)
            if target is None:
                raise NoRollbackHistory(
                    f"task {task!r}: alias {alias!r} has no earlier version to roll back to "
                    f"(currently {current or 'unset'}); use --to VERSION to choose one"
                )
            if target == current:
                raise RegistryError(f"task {task!r}: alias {alias!r} already points to version {target}")
            return target

        return self.announce(self._move(task, None, alias, "rollback", reason, actor, choose=choose))

    def record(
        self,
        task: str,
        version: str,
        alias: str,
        action: str,
        reason: str | None,
        actor: str | None = None,
        check: bool = True,
        also: Callable[[Any], object] | None = None,
    ) -> AliasChange:
        """Point `alias` at `version` (or leave it there) with a history entry of `action` (e.g. `rollout-start`),
        under the alias lock like any move. Observers are not told: the caller sends its own alert.

        `check=False` skips the promotion check (an entry that ends a rollout must not wait on loading a version).
        `also(connection)` writes rows of the history database in the entry's own transaction (a rollout's record),
        so a mover killed after the entry leaves both or neither; the alias itself follows as for any move.
        """
        return self._move(task, str(version), alias, action, reason, actor, check=check, also=also)

    def announce(self, change: AliasChange) -> AliasChange:
        """Tell every observer of `change`, unless it moved nothing (a promotion of the current version)."""
        if change.from_version != change.to_version:
            for observer in self.observers:
                observer(change)
        return change

    def _move(
        self,
        task: str,
        version: str | None,
        alias: str,
        action: str,
        reason: str | None,
        actor: str | None,
        choose: Callable[[str | None, list[AliasEvent]], str] | None = None,
        check: bool = True,
        also: Callable[[Any], object] | None = None,
    ) -> AliasChange:
        """Move `alias` under the task's alias lock: read, decide, write the history entry, then the alias."""
        if not ALIAS_NAME.fullmatch(alias):
            raise RegistryError(
                f"invalid alias {alias!r}: expected letters, digits, '_' or '-', starting with a letter"
            )
        if version is not None:
            self.catalog.version(task, version)  # refuses a version that does not exist, before anything changes
        with self.lock.hold(f"alias:{task}:{alias}"):
            model = self.catalog.require_task(task)
            current = (model.aliases or {}).get(alias)
            current = str(current) if current is not None else None
            history = self.history_of(task, model)
            current = self._complete_interrupted_move(task, alias, current, history)
            target = choose(current, history) if choose is not None else str(version)
            event = new_event(history, alias, action, current, target, actor or self.settings.actor, reason)
            if current == target and action == "promote":
                return AliasChange(task, alias, current, target, event)
            target_version = self.catalog.version(task, target)
            if self.promotion_check is not None and check:
                self.promotion_check(target_version, alias)
            if history_from_tags(model.tags or {}):
                self.move_history_out_of_tags(task, model)
            event = self._write_history_then_alias(f"move alias {alias} of {task}", event, task, alias, also)
            change = AliasChange(task, alias, current, target, event)
            # Under the lock, so concurrent moves rewrite the history table in the order they were made.
            self._describe_move(change)
        # After the lock: the next move need not wait for a card's upload.
        self._describe_cards(change)
        logger.info("%s: %s %s %s -> %s", task, action, alias, current, target)
        return change

    def _complete_interrupted_move(
        self, task: str, alias: str, current: str | None, history: list[AliasEvent]
    ) -> str | None:
        """Finish a move whose history entry was written but whose alias was not (its mover died in between)."""
        last = next((event for event in reversed(history) if event.alias == alias), None)
        if last is None or current == last.to_version or current != last.from_version:
            return current  # consistent, or moved outside prefix-registry (kept as it is)
        logger.warning("%s: completing an interrupted %s of %s to %s", task, last.action, alias, last.to_version)
        what = f"complete the move of {alias} of {task}"
        self._with_retry(what, lambda: self.gateway.set_alias(task, alias, last.to_version, what=what))
        return last.to_version

    def _write_history_then_alias(
        self, what: str, event: AliasEvent, task: str, alias: str, also: Callable[[Any], object] | None = None
    ) -> AliasEvent:
        """The history entry (committed, with `also`'s rows), then the alias; returns the entry as stored (see
        AliasHistoryStore)."""
        stored: list[AliasEvent] = []
        self._with_retry(what, lambda: stored.append(self.history.append(task, event, also)))
        failpoint(ALIAS_MOVE_AFTER_HISTORY)
        self._with_retry(what, lambda: self.gateway.set_alias(task, alias, event.to_version, what=what))
        return stored[-1]

    @staticmethod
    def _with_retry(what: str, write: Callable[[], object], attempts: int = WRITE_ATTEMPTS) -> None:
        """One gateway write; a busy store ('database is locked' while another process trains) is retried, and
        what still fails is one line, never the store's internal message. Registry errors (not found, the store
        unreachable) are not retried: another attempt would meet the same."""
        for attempt in range(1, attempts + 1):
            try:
                write()
                return
            except RegistryError:
                raise
            except Exception as error:
                if attempt == attempts:
                    raise RegistryError(f"cannot {what} after {attempts} attempts: {first_line(error)[:200]}") from None
                time.sleep(0.2 * 2**attempt)

    # -- what a move leaves besides the alias: the description's table, the rolled-back marks ------------------------
    def _describe_move(self, change: AliasChange) -> None:
        """Rebuild the model description's alias-history table; mark a rolled-back version as such, and clear the
        mark when that version is promoted to the same alias again.

        The move is already made: a failure here is logged, never raised (the history database stays the record).
        """
        try:
            model = self.catalog.require_task(change.task)
            aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
            description = with_history(model.description or "", self.history_of(change.task, model), aliases)
            self.gateway.set_task_description(change.task, description)
            if change.event.action == "rollback" and change.from_version:
                self._mark_rolled_back(change)
            elif change.event.action == "promote":
                self._clear_rolled_back(change)
        except Exception as error:
            logger.warning("%s: alias moved, but its description was not updated: %s", change.task, first_line(error))

    def _describe_cards(self, change: AliasChange) -> None:
        """Rewrite the comparison cards of the moved versions (`describe_cards`); a failure is logged, not raised."""
        if self.describe_cards is None:
            return
        try:
            self.describe_cards(change)
        except Exception as error:
            logger.warning(
                "%s: alias moved, but its comparison cards were not rewritten: %s", change.task, first_line(error)
            )

    def _mark_rolled_back(self, change: AliasChange) -> None:
        """The version an alias was rolled back from says so, in a tag and in its description."""
        task, version, event = change.task, str(change.from_version), change.event
        moved_off = self._model_version(task, version)
        tags = {TAG_ROLLED_BACK: f"from {change.alias} to v{change.to_version} at {event.at}"}
        if (moved_off.tags or {}).get(TAG_RETRAIN_DECISION) == RetrainOutcome.PROMOTED:
            tags[TAG_RETRAIN_DECISION] = PROMOTED_THEN_ROLLED_BACK
        self.gateway.set_version_tags(task, version, tags)
        note = rollback_markdown(change.alias, event.at, event.actor, event.reason, change.to_version)
        self.gateway.set_version_description(
            task, version, with_section(moved_off.description or "", note, ROLLBACK_HEADING)
        )

    def _clear_rolled_back(self, change: AliasChange) -> None:
        """A version promoted back to the alias it was rolled back from no longer says it was rolled back, in its
        tags or its description (the model's alias history keeps both moves)."""
        task, version, event = change.task, change.to_version, change.event
        promoted = self._model_version(task, version)
        tags = promoted.tags or {}
        if not tags.get(TAG_ROLLED_BACK, "").startswith(f"from {change.alias} "):
            return  # never rolled back, or off another alias
        self.gateway.delete_version_tag(task, version, TAG_ROLLED_BACK)
        if tags.get(TAG_RETRAIN_DECISION) == PROMOTED_THEN_ROLLED_BACK:
            self.gateway.set_version_tags(task, version, {TAG_RETRAIN_DECISION: RetrainOutcome.PROMOTED.value})
        note = repromotion_markdown(change.alias, event.at, event.actor, event.reason)
        description = without_section(promoted.description or "", ROLLBACK_HEADING)
        self.gateway.set_version_description(task, version, with_section(description, note, REPROMOTED_HEADING))

    def _model_version(self, task: str, version: str) -> Any:
        found = self.gateway.model_version(task, version)
        if found is None:
            raise RegistryError(f"version {version} of {task}: expected it to exist after the move, found none")
        return found
