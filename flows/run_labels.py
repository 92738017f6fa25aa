"""Names and tags of flow runs, so that Prefect's list of runs reads as what happened.

    retrain reviews v1 (drift)           at start: task, the champion it challenges, the trigger
    retrain reviews v1 → v2 (drift)      once the challenger is registered
    retrain reviews v1 (drift): skipped  when it trained nothing (cooldown, too few fresh labels; tagged `skipped`)
    rollback reviews v2 → v1             a rollback (flows/rollback.py)
    tags: task:reviews  trigger:drift  champion:v1  challenger:v2  decision:promoted

The `*_run_name` functions are `flow_run_name` callables (they read the run's parameters from `prefect.runtime`);
`label_flow_run` renames the running flow run and adds tags once more is known.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)


def retrain_run_name() -> str:
    """`retrain <task> (<trigger>)`: the name a retrain run starts with, before the champion is read."""
    parameters = _parameters()
    return f"retrain {parameters.get('task', '?')} ({parameters.get('trigger') or 'manual'})"


def retrain_name(task: str, champion: str, trigger: str, challenger: str | None = None) -> str:
    """`retrain <task> v<champion> (<trigger>)`, with `→ v<challenger>` once the challenger exists."""
    versions = f"v{champion}" + (f" → v{challenger}" if challenger else "")
    return f"retrain {task} {versions} ({trigger})"


def monitor_run_name() -> str:
    """`monitor <tasks> (last <N> predictions)`."""
    parameters = _parameters()
    tasks = parameters.get("tasks") or ["every served task"]
    return f"monitor {', '.join(tasks)} (last {parameters.get('current_last', '?')} predictions)"


def rollback_run_name() -> str:
    """`rollback <task>`: the name a rollback run starts with, before it knows the versions."""
    parameters = _parameters()
    return f"rollback {parameters.get('task', '?')}"


def train_run_name() -> str:
    """`train <task> on <data>`."""
    parameters = _parameters()
    return f"train {parameters.get('task', '?')} on {parameters.get('data', '?')}"


def label_flow_run(name: str | None = None, tags: Iterable[str] = ()) -> None:
    """Rename the flow run this code runs in and add `tags` to its own; nothing outside a flow run.

    A failure to relabel is logged, never raised: a name is not worth a failed retrain.
    """
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(run_id)
            client.update_flow_run(run_id, name=name, tags=sorted(set(current.tags) | set(tags)))
    except Exception as error:  # the Prefect API is the only thing that can fail here
        logger.warning("could not relabel flow run %s: %s", run_id, error)


def _parameters() -> dict[str, Any]:
    from prefect.runtime import flow_run

    return dict(flow_run.parameters or {})
