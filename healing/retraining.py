"""Retraining on drift: a challenger trained on fresh labelled traffic, judged against the champion.

    fresh feedback-labelled traffic ──┬─ held-out part ─────────────────────────────┐
                                      └─ training part + replay of the champion's data ─> challenger (warm start)
    champion and challenger scored on the SAME held-out fresh data (and the champion's own test split)
      -> decision PROMOTED when the challenger wins by `margin` without forgetting the old domain, else KEPT_CHAMPION

`retrain` returns the decision and moves no alias: `healing/orchestrator.py` acts on it. Nothing here knows
Prefect: `flows/retrain.py` and `prefixctl retrain` both call the orchestrator.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from prefix_registry.alerts import send_alert
from prefix_registry.healing.decision import (
    RetrainDecision,
    RetrainOutcome,
    RetrainSkipped,
    RetrainTrigger,
    SkipReason,
)
from prefix_registry.healing.decision_alert import retrain_decision_alert
from prefix_registry.healing.label_sources import cap_judge_set, trusted_fresh_labels
from prefix_registry.healing.retrain_policy import PromotionMode, RetrainPolicy
from prefix_registry.kinds import CLASSIFICATION, TaskKind
from prefix_registry.monitoring.drift_runs import DriftEpisode
from prefix_registry.registry.aliases import CHALLENGER, CHAMPION
from prefix_registry.registry.baseline_gate import retrain_gate
from prefix_registry.registry.comparison import TAG_COMPARED_WITH, TAG_DECISION_REASON
from prefix_registry.registry.comparison_card import card_path, write_card
from prefix_registry.registry.eval_sets import log_champion_scores
from prefix_registry.registry.loading import (
    fetch_verified_adapter,
    load_generator,
    load_training_splits,
    load_version,
    load_warm_start,
)
from prefix_registry.registry.runs import owner_gone, process_owner
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import TrainOutcome, one_line, train_and_register
from prefix_registry.registry.version_notes import (
    DECISION_HEADING,
    artifact_link,
    decision_markdown,
    with_section,
)
from prefix_registry.registry.versions import (
    TAG_DATA_WINDOW,
    TAG_DATA_WINDOW_SINCE,
    TAG_RETRAIN_DECISION,
    PrefixVersion,
)
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.training.config import DEFAULT_LEARNING_RATES, TrainConfig
from prefix_registry.training.data import LabelledTexts
from prefix_registry.training.splits import DataSplits

if TYPE_CHECKING:
    from prefix_registry.settings import Settings

__all__ = [
    "JUDGE_SETS",
    "LAST_RETRAIN_TAG",
    "RetrainData",
    "RetrainDecision",
    "RetrainOutcome",
    "RetrainSkipped",
    "RetrainTrigger",
    "SkipReason",
    "claim_retrain",
    "decide",
    "notify_decision",
    "retrain",
    "won_outcome",
]

logger = logging.getLogger(__name__)

LAST_RETRAIN_TAG = "prefix_registry.last_retrain_at"
# The process running the claimed retrain (see registry/runs.process_owner), FINISHED once its decision is recorded,
# ABANDONED when it raised. A claim whose process died (kill -9) or gave up (MLflow down) does not hold the cooldown:
# the retrain never ran.
RETRAIN_OWNER_TAG = "prefix_registry.retrain_owner"
FINISHED = "finished"
ABANDONED = "abandoned"
# A claim made on another host cannot be checked for a live process: after this long it no longer counts as running
# (the cooldown still applies as usual).
UNVERIFIABLE_CLAIM_LIFETIME = timedelta(hours=24)
_open_retrains: set[str] = set()  # tasks this process is retraining now
# The sets champion and challenger are both judged on.
JUDGE_SETS = ("fresh_holdout", "reference_test")


@dataclass
class RetrainData:
    """The challenger's training splits and the two judge sets, with their sizes and where fresh data starts."""

    splits: DataSplits
    holdout: pd.DataFrame
    reference_test: pd.DataFrame
    sizes: dict[str, int]
    since: str | None

    def judge_sets(self) -> dict[str, pd.DataFrame]:
        """The labelled sets champion and challenger are compared on (named as in JUDGE_SETS)."""
        return {"fresh_holdout": self.holdout, "reference_test": self.reference_test}


def retrain_lock_name(task: str) -> str:
    """The name, in the registry's cross-process lock, under which a retrain of `task` is claimed."""
    return f"retrain:{task}"


def check_cooldown(
    registry: PrefixRegistry,
    task: str,
    policy: RetrainPolicy,
    now: datetime | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Raise RetrainSkipped (COOLDOWN) when the task was retrained less than `cooldown_minutes` ago.

    `tags`: the task's tags when the caller already read them (under the claim's lock).
    """
    tags = registry.task_tags(task) if tags is None else tags
    last = tags.get(LAST_RETRAIN_TAG)
    if not last or policy.cooldown_minutes <= 0:
        return
    unfinished = _unfinished(task, tags)
    if unfinished:
        logger.warning("%s: the retrain claimed at %s never finished (%s): no cooldown", task, last, unfinished)
        return
    now = now or datetime.now(UTC)
    elapsed = now - datetime.fromisoformat(last)
    if elapsed < timedelta(minutes=policy.cooldown_minutes):
        left = timedelta(minutes=policy.cooldown_minutes) - elapsed
        raise RetrainSkipped(
            f"task {task!r} was retrained at {last}; cooldown of {policy.cooldown_minutes:g} min has "
            f"{int(left.total_seconds())} s left",
            SkipReason.COOLDOWN,
        )


def refuse_if_claimed(registry: PrefixRegistry, task: str, policy: RetrainPolicy) -> None:
    """Raise RetrainSkipped when another retrain of `task` holds the claim (RUNNING) or its cooldown runs
    (COOLDOWN). Only a read: `claim_retrain` repeats it under the lock before it claims."""
    tags = registry.task_tags(task)
    holder = _running_claim(task, tags)
    if holder:
        raise RetrainSkipped(
            f"task {task!r} is being retrained already ({holder}, claimed at {tags.get(LAST_RETRAIN_TAG)})",
            SkipReason.RUNNING,
        )
    check_cooldown(registry, task, policy, tags=tags)


def claim_retrain(registry: PrefixRegistry, task: str, policy: RetrainPolicy) -> None:
    """Claim the task's retrain: refuse it (RetrainSkipped RUNNING or COOLDOWN) or start the cooldown now.

    The check and the claim are one critical section under the registry's cross-process lock (the alias lock's
    database, `retrain:<task>`), so of two retrains started at the same instant, in any processes, exactly one
    claims and the other is refused. The claim is made before training, so a second trigger during training is
    turned away, and it names this process, so a retrain that dies or fails on the way does not hold the cooldown.
    """
    with registry.alias_lock.hold(retrain_lock_name(task)):
        refuse_if_claimed(registry, task, policy)
        registry.set_task_tag(task, RETRAIN_OWNER_TAG, process_owner())
        registry.set_task_tag(task, LAST_RETRAIN_TAG, datetime.now(UTC).isoformat(timespec="seconds"))
        _open_retrains.add(task)


@contextmanager
def claimed_retrain(registry: PrefixRegistry, task: str, policy: RetrainPolicy) -> Iterator[None]:
    """Hold the task's retrain claim (see `claim_retrain`) for the block: FINISHED when it ends, ABANDONED when it
    raises (so a failed retrain holds no cooldown, even for a process that lives on)."""
    claim_retrain(registry, task, policy)
    try:
        yield
    except BaseException:
        _open_retrains.discard(task)
        _close_claim(registry, task, ABANDONED)
        raise
    _open_retrains.discard(task)
    _close_claim(registry, task, FINISHED)


def _close_claim(registry: PrefixRegistry, task: str, state: str) -> None:
    try:
        registry.set_task_tag(task, RETRAIN_OWNER_TAG, state)
    # Any error: on the way out of a failed retrain it must not hide the failure. At worst the next trigger
    # retrains early (FINISHED lost), or this process's claim is read as lost anyway (ABANDONED lost).
    except Exception as error:
        logger.warning("%s: the retrain ended (%s) but its claim could not be closed: %s", task, state, error)


def _unfinished(task: str, tags: dict[str, str]) -> str | None:
    """Why the task's last claimed retrain never finished (its process is gone, or it raised), or None."""
    owner = tags.get(RETRAIN_OWNER_TAG, FINISHED)
    if owner == FINISHED:
        return None
    if owner == ABANDONED:
        return "it failed"
    return owner_gone(owner, still_open=task in _open_retrains)


def _running_claim(task: str, tags: dict[str, str]) -> str | None:
    """The process whose retrain of `task` may still be running (it claimed and has not finished), or None."""
    owner, claimed = tags.get(RETRAIN_OWNER_TAG, FINISHED), tags.get(LAST_RETRAIN_TAG)
    if not claimed or owner in (FINISHED, ABANDONED) or _unfinished(task, tags):
        return None
    on_this_host = owner.split()[:1] == [socket.gethostname()]
    # A claim from another host is not checkable from here: trusted for a while, not forever.
    if not on_this_host and datetime.now(UTC) - datetime.fromisoformat(claimed) > UNVERIFIABLE_CLAIM_LIFETIME:
        return None
    return f"process {owner}"


def assemble_data(
    registry: PrefixRegistry, champion: PrefixVersion, fresh: pd.DataFrame, policy: RetrainPolicy
) -> RetrainData:
    """Split fresh labels into a held-out judge set and training rows, and add replay of the champion's data."""
    labels = champion.labels
    generates = champion.kind.generates  # labels are reference texts: none is unknown, and none repeats to stratify
    unknown = [] if generates else sorted(set(fresh["label"]) - set(labels))
    if unknown:
        raise RetrainSkipped(
            f"feedback labels {unknown} are not labels of {champion.task}: {labels}", SkipReason.UNKNOWN_LABELS
        )
    take = _random_take if generates else _stratified_take
    holdout = take(fresh, policy.holdout_fraction, policy.seed)
    rest = fresh.drop(index=holdout.index)
    fresh_validation = take(rest, 0.1, policy.seed + 1)
    fresh_train = rest.drop(index=fresh_validation.index)
    reference = {name: frame[["text", "label"]] for name, frame in load_training_splits(registry, champion).items()}
    reference_train, reference_validation, reference_test = (reference[n] for n in ("train", "validation", "test"))
    n_replay = min(len(reference_train), round(len(fresh_train) * policy.replay_ratio))
    replay = reference_train.sample(n=n_replay, random_state=policy.seed)
    replay_validation = reference_validation.sample(
        n=min(len(reference_validation), max(len(fresh_validation), 1)), random_state=policy.seed
    )
    train = pd.concat([fresh_train, replay]).sample(frac=1.0, random_state=policy.seed).reset_index(drop=True)
    validation = pd.concat([fresh_validation, replay_validation]).reset_index(drop=True)
    splits = DataSplits(train=train, validation=validation, test=holdout.reset_index(drop=True), labels=labels)
    sizes = {
        "fresh": len(fresh),
        "fresh_train": len(fresh_train),
        "fresh_validation": len(fresh_validation),
        "fresh_holdout": len(holdout),
        "replay": len(replay),
        "reference_test": len(reference_test),
    }
    return RetrainData(splits, holdout.reset_index(drop=True), reference_test, sizes, None)


def challenger_config(champion: PrefixVersion, registry: PrefixRegistry, policy: RetrainPolicy) -> TrainConfig:
    """The champion's own training settings (a warm start needs the same shapes), with the policy's overrides."""
    _, manifest = fetch_verified_adapter(registry, champion)  # a tampered champion must not shape its successor
    config = TrainConfig.from_stored(dict(manifest.train_config))
    # Scaled from the method's default, not the champion's rate: a chain of retrains must not compound the scale.
    learning_rate = policy.learning_rate or DEFAULT_LEARNING_RATES[config.method] * policy.learning_rate_scale
    return config.replace(
        epochs=policy.epochs,
        learning_rate=learning_rate,
        max_length=policy.max_length,
        seed=policy.seed,
        refit_head=policy.refit_head,
    )


def score(registry: PrefixRegistry, version: PrefixVersion, sets: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Metrics of `version` on named labelled sets (the same sets for champion and challenger)."""
    kind = version.kind
    if kind.generates:
        generator = load_generator(registry, version)
        return {
            name: kind.metrics(frame["label"].tolist(), generator.generate(frame["text"].tolist()), [])
            for name, frame in sets.items()
        }
    loaded = load_version(registry, version)
    return {
        name: kind.metrics(
            frame["label"].tolist(),
            kind.predicted(loaded.predict_outputs(frame["text"].tolist()), loaded.labels),
            loaded.labels,
        )
        for name, frame in sets.items()
    }


def decide(
    champion: dict[str, Any], challenger: dict[str, Any], policy: RetrainPolicy, kind: TaskKind = CLASSIFICATION
) -> tuple[bool, str]:
    """Promote only a challenger that wins on fresh data by the margin and keeps the old domain, on the decision
    metric of the task's `kind` (a gain is an improvement in the metric's own direction)."""
    metric, name = kind.decision_metric, kind.label
    fresh_gain = kind.gain(challenger["fresh_holdout"][metric], champion["fresh_holdout"][metric])
    reference_change = kind.gain(challenger["reference_test"][metric], champion["reference_test"][metric])
    if fresh_gain < policy.margin:
        return False, (
            f"challenger gains {fresh_gain:+.3f} {name} on fresh held-out data; {policy.margin:.3f} is required"
        )
    if reference_change < -policy.max_reference_regression:
        return False, (
            f"challenger loses {-reference_change:.3f} {name} on the champion's test data; at most "
            f"{policy.max_reference_regression:.3f} is allowed"
        )
    return True, (
        f"challenger gains {fresh_gain:+.3f} {name} on fresh held-out data, {policy.margin:+.3f} required "
        f"({reference_change:+.3f} on the champion's test data)"
    )


def retrain(
    registry: PrefixRegistry,
    log: PredictionLog,
    task: str,
    policy: RetrainPolicy | None = None,
    trigger: RetrainTrigger = RetrainTrigger.MANUAL,
    drift: DriftEpisode | None = None,
    since: datetime | None = None,
    progress: bool = False,
) -> RetrainDecision:
    """The whole retrain but the act: checks, claim, data, challenger, judgement, decision recorded on the challenger.

    It moves no alias (the challenger gets the `challenger` alias when registered, as every challenger does):
    `healing.orchestrator.act` carries the decision out.

    Args:
        trigger: what started the retrain (a word `RetrainTrigger` knows: "drift" or "manual").
        drift: the drift episode that started the retrain (fresh data starts where it started), if any.
        since: fresh data since this time instead (default: the episode's start, else the champion's creation).
    Returns:
        The decision. Raises RetrainSkipped when the retrain does not start (cooldown, another retrain of the task
        running, too few fresh labels), with its `cause`.
    """
    policy = policy or RetrainPolicy()
    trigger = RetrainTrigger.parse(trigger)
    # Read first so a task in its cooldown (or being retrained) is told so at once; claimed atomically below.
    refuse_if_claimed(registry, task, policy)
    champion = registry.resolve(task, alias=CHAMPION)
    since = since or fresh_since(champion, drift)
    # Revoked keys left out, no key above its share of the labels (issue 11); counts per source go in the decision.
    fresh, sources = trusted_fresh_labels(log, task, since, policy.max_fresh_labels)
    if len(fresh) < policy.min_fresh_labels:
        raise RetrainSkipped(
            f"task {task!r} has {len(fresh)} fresh feedback label(s) since {since:%Y-%m-%d %H:%M:%S}"
            f"; {policy.min_fresh_labels} are needed to retrain (by source: {sources.counts})",
            SkipReason.TOO_FEW_LABELS,
        )
    with claimed_retrain(registry, task, policy):
        data = assemble_data(registry, champion, fresh, policy)
        data.holdout = cap_judge_set(data.holdout, sources)
        data.sizes.update(sources.counts)
        data.since = since.isoformat()
        outcome = train_challenger(registry, champion, data, policy, trigger, drift, progress)
        return judge_and_record(registry, champion, outcome, data, policy, trigger, drift)


def fresh_since(champion: PrefixVersion, drift: DriftEpisode | None) -> datetime:
    """Fresh data starts where the drift episode started, else when the champion was registered."""
    if drift is not None:
        start = drift.started_at or drift.verdict.current_from
        if start is not None:
            return start
    return champion.created_at


def train_challenger(
    registry: PrefixRegistry,
    champion: PrefixVersion,
    data: RetrainData,
    policy: RetrainPolicy,
    trigger: RetrainTrigger,
    drift: DriftEpisode | None,
    progress: bool = False,
) -> TrainOutcome:
    """Train, evaluate on the judge sets and register the challenger (alias `challenger`), warm-started."""
    config = challenger_config(champion, registry, policy)
    texts = LabelledTexts(
        pd.concat([data.splits.train, data.splits.validation, data.splits.test]),
        origin=f"fresh feedback of {champion.task} since {data.since} + replay of v{champion.version}'s training data",
    )
    return train_and_register(
        registry,
        champion.task,
        texts,
        config,
        alias=CHALLENGER,
        trigger=trigger.value,
        trigger_reason=json.dumps(drift.brief(), default=str) if drift else None,
        trigger_summary=drift_summary(drift) if drift else None,
        trigger_run_id=drift.run_id if drift else None,
        parent=champion,
        warm_start=load_warm_start(registry, champion),
        splits=data.splits,
        # Scored here, once, on the same sets the champion is scored on below.
        extra_evaluations=data.judge_sets(),
        extra_tags={
            TAG_DATA_WINDOW_SINCE: data.since or "",
            TAG_DATA_WINDOW: f"fresh feedback since {data.since} + replay of v{champion.version}",
        },
        # The traffic the challenger is judged on is also what its monitor should compare new traffic with.
        reference=data.holdout,
        progress=progress,
    )


def judge_and_record(
    registry: PrefixRegistry,
    champion: PrefixVersion,
    outcome: TrainOutcome,
    data: RetrainData,
    policy: RetrainPolicy,
    trigger: RetrainTrigger,
    drift: DriftEpisode | None,
) -> RetrainDecision:
    """Score the champion on the judge sets, decide, and record the decision on the challenger (tags, description,
    comparison card). Moves no alias: the orchestrator acts on the decision."""
    challenger = registry.version(champion.task, outcome.version)
    kind = challenger.kind
    champion_scores = score(registry, champion, data.judge_sets())
    challenger_scores = {name: outcome.evaluations[name] for name in JUDGE_SETS}
    promoted, reason = decide(champion_scores, challenger_scores, policy, kind)
    promoted, reason = retrain_gate(challenger, promoted, reason, registry.settings)
    decision = RetrainDecision(
        task=champion.task,
        champion_version=champion.version,
        challenger_version=challenger.version,
        outcome=won_outcome(policy) if promoted else RetrainOutcome.KEPT_CHAMPION,
        reason=reason,
        trigger=trigger,
        champion_scores=_headline(champion_scores, kind),
        challenger_scores=_headline(challenger_scores, kind),
        data={**data.sizes, "since": data.since},
        drift=drift,
    )
    # The champion's scores on the very sets that judged the challenger, on the champion's own run under the sets'
    # names (`eval/<dataset>/...`, step 0), the sets added to its datasets: one row per set in MLflow's Compare.
    log_champion_scores(registry, champion, challenger, data.judge_sets(), champion_scores)
    # How much data of each kind the challenger saw: its run's parameters (a JSON tag once).
    registry.log_run_params(challenger.run_id, {f"data_size.{name}": str(size) for name, size in data.sizes.items()})
    registry.set_version_tags(
        champion.task,
        challenger.version,
        {
            TAG_RETRAIN_DECISION: decision.outcome.value,
            TAG_DECISION_REASON: one_line(reason, 500),
            TAG_COMPARED_WITH: champion.version,
        },
    )
    record_comparison(registry, champion, challenger.version, decision.outcome, reason, policy)
    return decision


def won_outcome(policy: RetrainPolicy) -> RetrainOutcome:
    """What a winning challenger's decision says: PROMOTED when the policy promotes at once, ROLLOUT_STARTED when
    it rolls the challenger out as a shadow or canary (the champion keeps serving until the rollout judge acts)."""
    return RetrainOutcome.PROMOTED if policy.promotion is PromotionMode.DIRECT else RetrainOutcome.ROLLOUT_STARTED


def record_comparison(
    registry: PrefixRegistry,
    champion: PrefixVersion,
    challenger_version: str,
    outcome: RetrainOutcome,
    reason: str,
    policy: RetrainPolicy,
) -> None:
    """The decision where people read it: a section of the challenger's description, and an HTML comparison card
    (scores per set, lineage, decision) in the challenger's run."""
    comparison = write_card(registry, champion.task, champion.version, challenger_version)
    card = artifact_link(registry.experiment_id(champion.task), comparison.b.run_id, card_path(comparison))
    rows = [
        (
            row.set,
            (row.dataset_a or "-") if row.same_set else f"{row.dataset_a or '-'} / {row.dataset_b or '-'}",
            _fmt(row.a),
            _fmt(row.b),
            f"{row.change:+.3f}" if row.change is not None else "not the same set",
        )
        for row in comparison.rows
        if row.metric == champion.kind.decision_metric
    ]
    verdict = {
        RetrainOutcome.PROMOTED: "PROMOTED to champion",
        RetrainOutcome.ROLLOUT_STARTED: f"won; a {policy.promotion} rollout at {policy.rollout_share:g}% starts "
        f"(v{champion.version} stays champion until the rollout judge promotes or rolls it back on live labels)",
    }.get(outcome, f"not promoted (v{champion.version} stays champion)")
    section = decision_markdown(verdict, reason, champion.version, challenger_version, rows, card)
    description = with_section(comparison.b.description, section, DECISION_HEADING)
    registry.set_version_description(champion.task, challenger_version, description)


def drift_summary(drift: DriftEpisode) -> str:
    """One line saying what drifted, since when, over how many windows."""
    brief = drift.brief()
    signals = ", ".join(brief.get("drifted_signals") or []) or "no named signal"
    since = brief.get("drift_started_at") or "?"
    return one_line(
        f"drift in {signals} of v{brief.get('version')} over {brief.get('drifted_windows')} window(s) since {since}"
    )


def notify_decision(decision: RetrainDecision, settings: Settings | None = None) -> None:
    """Tell people what a retrain decided (the alert waits in the outbox if no receiver answers)."""
    send_alert(retrain_decision_alert(decision), settings=settings)


def _stratified_take(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    parts = [
        group.sample(n=max(1, round(len(group) * fraction)), random_state=seed)
        for _, group in frame.groupby("label", sort=True)
        if len(group) > 1
    ]
    return pd.concat(parts) if parts else frame.iloc[:0]


def _random_take(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A `fraction` of the rows (at least one when there are two or more), for labels that are texts."""
    if len(frame) < 2:
        return frame.iloc[:0]
    return frame.sample(n=max(1, round(len(frame) * fraction)), random_state=seed)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _headline(scores: dict[str, Any], kind: TaskKind) -> dict[str, Any]:
    return {name: kind.headline(m) for name, m in scores.items()}
