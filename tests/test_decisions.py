"""Specification of retrain decisions as values: the enums of drift status, trigger and outcome, the orchestrator
that alone acts on a decision, and the retrain claim that two processes cannot both win."""

from __future__ import annotations

import ast
import multiprocessing
import time
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from prefix_registry.errors import ConfigError
from prefix_registry.healing.decision import (
    RetrainDecision,
    RetrainOutcome,
    RetrainSkipped,
    RetrainTrigger,
    SkipReason,
)
from prefix_registry.healing.orchestrator import PromotionMode, act
from prefix_registry.healing.retrain_policy import RetrainPolicy
from prefix_registry.healing.retraining import (
    ABANDONED,
    FINISHED,
    LAST_RETRAIN_TAG,
    RETRAIN_OWNER_TAG,
    claim_retrain,
)
from prefix_registry.monitoring.drift import DriftStatus, DriftVerdict
from prefix_registry.monitoring.drift_runs import DriftEpisode
from prefix_registry.registry.aliases import CHAMPION
from tests.package_layout import source_folders

ROOT = Path(__file__).resolve().parents[1]
# The folders that make up the package (pyproject's package-dir), tests and benchmarks left out.
PACKAGE_DIRS = source_folders()
STATE_WORDS = {
    *(s.value for s in DriftStatus),
    *(o.value for o in RetrainOutcome),
    *(o.slug for o in RetrainOutcome),
    *(t.value for t in RetrainTrigger),
}


def _package_files() -> list[Path]:
    return [path for folder in PACKAGE_DIRS for path in sorted((ROOT / folder).rglob("*.py"))]


def _compared_state_words(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, word) of every string literal in a comparison (`==`, `!=`, `in`, `is`...) that is a state's word."""

    def literals(node: ast.expr) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return [word for element in node.elts for word in literals(element)]
        return []

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, word) for word in literals(operand) if word in STATE_WORDS]
    return found


def test_the_enums_keep_the_words_users_and_stored_tags_read() -> None:
    assert [s.value for s in DriftStatus] == ["ok", "drift", "insufficient_data"]
    assert [t.value for t in RetrainTrigger] == ["drift", "manual"]
    assert RetrainOutcome.PROMOTED == "promoted" and RetrainOutcome.KEPT_CHAMPION == "kept champion"
    assert RetrainOutcome.PROMOTED_THEN_ROLLED_BACK == "promoted, then rolled back"
    # Prefect tags and the monitoring run's caused_retrain_run_decision have always said it without spaces.
    assert [o.slug for o in (RetrainOutcome.PROMOTED, RetrainOutcome.KEPT_CHAMPION, RetrainOutcome.SKIPPED)] == [
        "promoted",
        "kept-champion",
        "skipped",
    ]
    assert f"{DriftStatus.DRIFT}:{RetrainTrigger.MANUAL}" == "drift:manual"


def test_no_string_literal_is_compared_with_a_drift_status_trigger_or_decision_in_the_package() -> None:
    offenders = []
    for path in _package_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders += [f"{path.relative_to(ROOT)}:{line}: {word!r}" for line, word in _compared_state_words(tree)]
    assert offenders == []


def test_the_literal_scan_finds_the_comparisons_it_forbids() -> None:
    tree = ast.parse('a = s == "drift"\nb = t in ("kept champion", "x")\nc = "ok" if d else "e"\n')
    assert _compared_state_words(tree) == [(1, "drift"), (2, "kept champion")]


def test_only_the_orchestrator_moves_an_alias_in_healing() -> None:
    callers = []
    for path in sorted((ROOT / "healing").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("promote", "rollback"):
                callers.append(path.name)
    assert set(callers) == {"orchestrator.py"}


def _verdict(status: str = "drift") -> DriftVerdict:
    return DriftVerdict("reviews", "1", status, {"size": 100}, {"size": 80, "from": "2026-12-01T10:00:00+00:00"})


def _decision(outcome: RetrainOutcome, drift: DriftEpisode | None = None) -> RetrainDecision:
    return RetrainDecision(
        task="reviews",
        champion_version="1",
        challenger_version="2",
        outcome=outcome,
        reason="challenger gains +0.050 macro-F1 on fresh held-out data",
        trigger=RetrainTrigger.DRIFT if drift else RetrainTrigger.MANUAL,
        champion_scores={"fresh_holdout": {"accuracy": 0.7, "macro_f1": 0.69, "n": 30}},
        challenger_scores={"fresh_holdout": {"accuracy": 0.75, "macro_f1": 0.74, "n": 30}},
        data={"fresh": 100, "since": "2026-12-01T10:00:00+00:00"},
        drift=drift,
        decided_at="2026-12-01T12:00:00+00:00",
    )


def test_a_verdict_status_given_as_its_word_becomes_the_enum_and_a_wrong_word_is_refused() -> None:
    verdict = _verdict("drift")
    assert verdict.status is DriftStatus.DRIFT and verdict.drift_detected
    assert DriftVerdict.from_dict(verdict.to_dict()) == verdict and verdict.to_dict()["status"] == "drift"
    with pytest.raises(ValueError, match=r"drift status must be one of \['ok', 'drift', 'insufficient_data'\]"):
        _verdict("drifted")


def test_a_decision_is_a_frozen_value_whose_summary_keeps_the_json_shape() -> None:
    episode = DriftEpisode(_verdict(), run_id="abc123", started_at=None, windows=2)
    decision = _decision(RetrainOutcome.PROMOTED, episode)
    summary = decision.summary()
    assert list(summary) == [
        "task",
        "champion_version",
        "challenger_version",
        "promoted",
        "outcome",  # added with rollouts: "promoted", "rollout started" or "kept champion"
        "reason",
        "trigger",
        "champion_scores",
        "challenger_scores",
        "data",
        "drift_verdict",
        "decided_at",
    ]
    assert (
        summary["promoted"] is True
        and summary["outcome"] == "promoted"
        and summary["trigger"] == "drift"
        and type(summary["trigger"]) is str
    )
    assert summary["drift_verdict"] == episode.brief() and summary["drift_verdict"]["status"] == "drift"
    assert decision.drift is episode and _decision(RetrainOutcome.KEPT_CHAMPION).summary()["drift_verdict"] is None
    with pytest.raises(FrozenInstanceError):
        decision.outcome = RetrainOutcome.KEPT_CHAMPION  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"one of \[.promoted., .rollout started., .kept champion.\]; got outcome"):
        _decision(RetrainOutcome.SKIPPED)


def test_an_unknown_trigger_is_one_line_naming_the_known_ones() -> None:
    assert RetrainTrigger.parse("drift") is RetrainTrigger.DRIFT
    with pytest.raises(ConfigError, match=r"must be one of \['drift', 'manual'\], got 'fault'"):
        RetrainTrigger.parse("fault")


class _PromotionRecorder:
    """Stands in for PrefixRegistry where only `promote` is called."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def promote(self, task: str, version: str, alias: str, reason: str | None = None) -> str:
        self.calls.append((task, version, alias, reason))
        return "moved"


def test_the_orchestrator_promotes_a_winner_directly_and_leaves_a_kept_champion_alone() -> None:
    registry: Any = _PromotionRecorder()
    assert act(registry, _decision(RetrainOutcome.KEPT_CHAMPION)) is None
    assert registry.calls == []
    assert act(registry, _decision(RetrainOutcome.PROMOTED), PromotionMode.DIRECT) == "moved"
    assert registry.calls == [
        ("reviews", "2", CHAMPION, "retrain (manual): challenger gains +0.050 macro-F1 on fresh held-out data")
    ]


def test_a_skip_keeps_its_cause_across_processes() -> None:
    import pickle

    skipped = pickle.loads(pickle.dumps(RetrainSkipped("task 'reviews' was retrained at ...", SkipReason.COOLDOWN)))
    assert skipped.cause is SkipReason.COOLDOWN and str(skipped) == "task 'reviews' was retrained at ..."


def _claim_at_once(task: str, start: Any, done: Any, results: Any) -> None:
    """One process's claim, released with the other's by `start`; it lives on until both have claimed (`done`),
    so the loser sees a live claim, not a dead one."""
    from prefix_registry.registry.store import PrefixRegistry

    read = PrefixRegistry.task_tags

    def slow_read(self: PrefixRegistry, name: str) -> dict[str, str]:
        tags = read(self, name)
        time.sleep(0.5)  # between reading the claim and writing it: where an unlocked check-then-claim races
        return tags

    PrefixRegistry.task_tags = slow_read  # type: ignore[method-assign]
    registry = PrefixRegistry()
    start.wait(timeout=120)
    try:
        claim_retrain(registry, task, RetrainPolicy(cooldown_minutes=60))
        results.put(("claimed", None, ""))
    except RetrainSkipped as skipped:
        results.put(("refused", skipped.cause.value, str(skipped)))
    done.wait(timeout=120)


def test_two_processes_claiming_a_retrain_at_the_same_instant_one_runs_the_other_is_refused(home: Path) -> None:
    from prefix_registry.registry.store import PrefixRegistry

    registry = PrefixRegistry()
    registry.ensure_task("reviews")
    context = multiprocessing.get_context("spawn")
    start, done, results = context.Barrier(2), context.Barrier(2), context.Queue()
    workers = [context.Process(target=_claim_at_once, args=("reviews", start, done, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = sorted(results.get(timeout=180) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    (claimed, refused) = outcomes
    assert claimed[0] == "claimed"
    assert refused[:2] == ("refused", SkipReason.RUNNING.value) and "is being retrained already" in refused[2]


def test_a_finished_claim_holds_the_cooldown_and_a_failed_one_does_not(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefix_registry.healing import retraining
    from prefix_registry.registry.store import PrefixRegistry

    monkeypatch.setattr(retraining, "_open_retrains", set())  # this process's open retrains, for this test only
    registry = PrefixRegistry()
    registry.ensure_task("reviews")
    policy = RetrainPolicy(cooldown_minutes=60)
    claim_retrain(registry, "reviews", policy)
    with pytest.raises(RetrainSkipped, match="being retrained already") as running:
        claim_retrain(registry, "reviews", policy)
    assert running.value.cause is SkipReason.RUNNING
    registry.set_task_tag("reviews", RETRAIN_OWNER_TAG, FINISHED)
    with pytest.raises(RetrainSkipped, match="cooldown of 60 min") as cooling:
        claim_retrain(registry, "reviews", policy)
    assert cooling.value.cause is SkipReason.COOLDOWN
    registry.set_task_tag("reviews", RETRAIN_OWNER_TAG, ABANDONED)
    claim_retrain(registry, "reviews", policy)  # the failed retrain never ran: no cooldown
    assert registry.task_tags("reviews")[RETRAIN_OWNER_TAG] not in (FINISHED, ABANDONED)
    assert registry.task_tags("reviews")[LAST_RETRAIN_TAG]


def test_prefixctl_retrain_is_turned_away_while_another_process_retrains_the_task(home: Path, cli: Any) -> None:
    import os
    from datetime import UTC, datetime

    from prefix_registry.registry.runs import process_owner
    from prefix_registry.registry.store import PrefixRegistry

    registry = PrefixRegistry()
    registry.ensure_task("reviews")
    # A live process on this host (the one that started the tests) holds the claim, as a running flow would.
    registry.set_task_tag("reviews", RETRAIN_OWNER_TAG, process_owner(os.getppid()))
    registry.set_task_tag("reviews", LAST_RETRAIN_TAG, datetime.now(UTC).isoformat(timespec="seconds"))
    running = cli("retrain", "reviews", "--cooldown-minutes", "0")
    assert running.exit_code == 2 and "is being retrained already" in running.stderr
    assert len(running.stderr.strip().splitlines()) == 1
    registry.set_task_tag("reviews", RETRAIN_OWNER_TAG, FINISHED)
    cooling = cli("retrain", "reviews", "--cooldown-minutes", "30")
    assert cooling.exit_code == 2 and "cooldown of 30 min" in cooling.stderr
