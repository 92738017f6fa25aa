"""`rollback-prefix`: a rollback as a Prefect flow run, so Prefect's run list shows it beside the retrains.

    rollback movie-sentiment v2 → v1           the run's name, once the alias has moved
    tags: task:movie-sentiment  rollback  from:v2  to:v1  actor:<who>
    artifact `rollback-<task>`: task, alias, from, to, who, when, why (markdown)

The move is the registry's own (`PrefixRegistry.rollback`, under the alias lock, history first), made through the
announcing registry: it alerts like `prefixctl rollback` and is a `prefix.model.rolled-back` event too.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import flow, get_run_logger

from prefix_registry.flows.run_labels import label_flow_run, rollback_run_name
from prefix_registry.registry.aliases import CHAMPION
from prefix_registry.registry.store import AliasChange

ROLLBACK_TAG = "rollback"


def artifact_key(task: str) -> str:
    """`rollback-<task>` in the characters Prefect allows in a key (lowercase letters, digits, dashes)."""
    return "rollback-" + re.sub(r"[^a-z0-9-]+", "-", task.lower()).strip("-")


def rollback_markdown(change: AliasChange) -> str:
    """The rollback as markdown: which alias of which task moved from which version to which, who, when, why."""
    event = change.event
    return (
        f"# Rollback of {change.task}: {change.alias} v{change.from_version} → v{change.to_version}\n\n"
        "| task | alias | from | to | who | when | why |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {change.task} | {change.alias} | v{change.from_version} | v{change.to_version} | {event.actor} "
        f"| {event.at} | {event.reason or '-'} |\n\n"
        f"v{change.to_version} serves again: servers following the `{change.alias}` alias swap to it without a "
        "restart.\n"
    )


@flow(name="rollback-prefix", flow_run_name=rollback_run_name, log_prints=True, persist_result=True)
def rollback_prefix_flow(
    task: str,
    to: str | None = None,
    reason: str | None = None,
    actor: str | None = None,
    alias: str = CHAMPION,
) -> dict[str, Any]:
    """Move `alias` of `task` back to its previous version (or to `to`); returns `AliasChange.summary()`.

    Args:
        reason: why, kept in the alias history, the alert, the event and this run's artifact.
        actor: who (default: the registry's, the user running it).
    """
    from prefect.artifacts import create_markdown_artifact

    from prefix_registry.flows.alias_events import announcing_registry

    change = announcing_registry().rollback(task, to=to, alias=alias, reason=reason, actor=actor)
    label_flow_run(
        f"rollback {task} v{change.from_version} → v{change.to_version}",
        tags=[
            f"task:{task}",
            ROLLBACK_TAG,
            f"from:v{change.from_version}",
            f"to:v{change.to_version}",
            f"actor:{change.event.actor}",
        ],
    )
    create_markdown_artifact(
        markdown=rollback_markdown(change),
        key=artifact_key(task),
        description=f"rollback {task}: {alias} v{change.from_version} → v{change.to_version}",
    )
    get_run_logger().info(
        "%s: %s moved back from v%s to v%s by %s (%s)",
        task,
        alias,
        change.from_version,
        change.to_version,
        change.event.actor,
        change.event.reason or "no reason given",
    )
    return change.summary()
