"""`judge-rollout`: judge every running rollout on its live labels, on a schedule, and act on each verdict.

The same `healing.rollout_actions.judge_rollout` as `prefixctl rollout judge`: a worse challenger is rolled back
(warning alert), a good one promoted (promotion alert, Prefect event), an undecided one left running.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from prefix_registry.healing.rollout_actions import judge_rollout
from prefix_registry.healing.rollout_judge import JudgePolicy


@flow(name="judge-rollout", log_prints=True)
def judge_rollout_flow(tasks: list[str] | None = None, policy: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Judge the rollout of each of `tasks` (default: every task) that has one; returns one summary per rollout:
    `{"task", "decision", "reason", "acted", ...}` as `prefixctl rollout judge --json` prints it."""
    from prefix_registry.config_values import from_values
    from prefix_registry.flows.alias_events import announcing_registry
    from prefix_registry.traffic.prediction_log import PredictionLog

    judge_policy = from_values(JudgePolicy, policy, "rollout judge")
    registry = announcing_registry()
    summaries = []
    with PredictionLog.from_settings(registry.settings) as log:
        for name in tasks or registry.tasks():
            if registry.rollouts.current(name) is None:
                continue
            judgement = judge_rollout(registry, log, name, judge_policy)
            print(f"{name}: {judgement.decision.verdict.value}: {judgement.decision.reason}")
            summaries.append(judgement.summary())
    return summaries
