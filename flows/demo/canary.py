"""The demo's canary chapter (`prefixctl demo --rollout canary`): a bad challenger rolled back by the judge, a good
one promoted, each as a canary on live traffic with feedback labels.

    for each challenger (bad, then good):
        rollout start --canary SHARE  ->  windows of traffic, one routing key per request, labels as feedback
                                      ->  rollout judge after each window until it decides (or `max_windows`)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd

from prefix_registry.healing.rollout_actions import judge_rollout, start_rollout, stop_rollout
from prefix_registry.healing.rollout_judge import JudgePolicy, Verdict
from prefix_registry.registry.rollouts import RolloutMode

if TYPE_CHECKING:
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.traffic.prediction_log import PredictionLog

Say = Callable[[str], None]


def stream_keyed(client: httpx.Client, task: str, frame: pd.DataFrame, prefix: str) -> dict[str, int]:
    """Send each text as its own request with its own routing key, then its true label as feedback; returns the
    requests each version answered."""
    answered: dict[str, int] = {}
    for i, (text, label) in enumerate(zip(frame["text"], frame["label"], strict=True)):
        response = client.post(
            "/v1/predict",
            json={"task": task, "texts": [text], "routing_key": f"{prefix}-{i}"},
            headers={"x-prediction-source": "demo"},
        )
        response.raise_for_status()
        prediction = response.json()["predictions"][0]
        answered[prediction["version"]] = answered.get(prediction["version"], 0) + 1
        client.post(
            "/v1/feedback", json={"prediction_id": prediction["prediction_id"], "label": label}
        ).raise_for_status()
    return answered


def await_rollout(client: httpx.Client, task: str, version: str, timeout: float = 60.0) -> None:
    """Wait until the server routes `task`'s rollout of `version` (pushed, or read at its next poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = client.get("/v1/tasks").json()["tasks"]
        rollout = next((t.get("rollout") for t in tasks if t["task"] == task), None)
        if rollout and rollout.get("challenger_version") == version:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the server did not start routing the rollout of {task} v{version} within {timeout:g} s")


def judged_canary(
    registry: PrefixRegistry,
    log: PredictionLog,
    client: httpx.Client,
    task: str,
    version: str,
    windows: Iterator[pd.DataFrame],
    tell: Say,
    share: float = 30.0,
    policy: JudgePolicy | None = None,
    max_windows: int = 4,
) -> dict[str, Any]:
    """Run `version` as a canary of `share` percent until the judge promotes or rolls it back; returns what it
    decided, after how many labels, with the arms' live accuracy. Stopped by hand if still undecided."""
    if max_windows < 1:
        raise ValueError(f"a canary needs at least one window of traffic, got max_windows={max_windows}")
    start_rollout(registry, task, version, RolloutMode.CANARY, share, actor="demo", reason="demo: canary chapter")
    await_rollout(client, task, version)
    tell(f"canary: v{version} answers {share:g}% of requests (sticky per routing key) beside the champion")
    judgement = None
    for n in range(max_windows):
        answered = stream_keyed(client, task, next(windows), f"{task}-v{version}-{n}")
        log.flush(timeout=60)
        judgement = judge_rollout(registry, log, task, policy)
        champion, challenger = judgement.stats.champion, judgement.stats.challenger
        tell(
            f"canary window {n + 1}: answered by {answered}; live accuracy v{challenger.version} "
            f"{challenger.accuracy or 0:.3f} vs v{champion.version} {champion.accuracy or 0:.3f} "
            f"-> judge: {judgement.decision.verdict}"
        )
        if judgement.decision.verdict is not Verdict.CONTINUE:
            break
    if judgement is not None and judgement.decision.verdict is Verdict.CONTINUE:
        stop_rollout(registry, task, reason="demo: undecided after its windows", actor="demo")
    if judgement is None:  # unreachable: max_windows >= 1
        raise RuntimeError("no window was judged")
    stats = judgement.stats
    return {
        "version": version,
        "decision": str(judgement.decision.verdict),
        "reason": judgement.decision.reason,
        "labels": {"champion": stats.champion.labelled, "challenger": stats.challenger.labelled},
        "live_accuracy": {"champion": stats.champion.accuracy, "challenger": stats.challenger.accuracy},
        "champion_after": registry.aliases(task)["champion"],
    }
