"""Retraining on drift: a challenger trained on fresh labelled traffic is promoted only if it beats the champion.

    fresh feedback-labelled traffic ──┬─ held-out part ─────────────────────────────┐
                                      └─ training part + replay of the champion's data ─> challenger (warm start)
    champion and challenger scored on the SAME held-out fresh data (and the champion's own test split)
      -> promote the challenger when it wins by `margin` without forgetting the old domain, else keep the champion

Nothing here knows Prefect: `flows/retrain.py` runs these steps as tasks; `prefixctl retrain` runs them directly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from prefix_registry.errors import PrefixRegistryError
from prefix_registry.monitoring.prediction_log import PredictionLog
from prefix_registry.registry.aliases import CHALLENGER, CHAMPION
from prefix_registry.registry.baseline_gate import retrain_gate
from prefix_registry.registry.loading import load_training_split, load_version, load_warm_start
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import TrainOutcome, train_and_register
from prefix_registry.registry.versions import PrefixVersion
from prefix_registry.training.config import DEFAULT_LEARNING_RATES, TrainConfig
from prefix_registry.training.data import LabelledTexts
from prefix_registry.training.evaluation import classification_metrics, flat_metrics
from prefix_registry.training.splits import DataSplits

logger = logging.getLogger(__name__)

LAST_RETRAIN_TAG = "prefix_registry.last_retrain_at"
DECISION_TAG = "retrain_decision"


class RetrainSkipped(PrefixRegistryError):
    """A retrain that did not start (cooldown, too little fresh data): the champion keeps serving."""


@dataclass
class RetrainPolicy:
    """When and how a challenger is trained, and what it must do to replace the champion."""

    margin: float = field(default=0.01, metadata={"help": "Macro-F1 the challenger must gain on fresh held-out data."})
    max_reference_regression: float = field(
        default=0.05, metadata={"help": "Macro-F1 the challenger may lose on the champion's own test split."}
    )
    holdout_fraction: float = field(default=0.3, metadata={"help": "Share of fresh labels kept for the judgement."})
    min_fresh_labels: int = field(default=100, metadata={"help": "Fewer fresh labels than this: no retrain."})
    max_fresh_labels: int = field(default=5000, metadata={"help": "Use at most this many (the newest) fresh labels."})
    # Measured on RT -> IMDB with 1,500 fresh labels (see the README): half as much replay as fresh data and twice
    # the champion's learning rate gave +9 macro-F1 points on fresh held-out data (replay 1.0, same rate: +7 after 5
    # epochs) without forgetting the old domain, in the least time.
    replay_ratio: float = field(
        default=0.5, metadata={"help": "Rows of the champion's training data replayed per fresh training row."}
    )
    cooldown_minutes: float = field(default=60.0, metadata={"help": "Minimum time between two retrains of a task."})
    epochs: int | None = field(default=None, metadata={"help": "Challenger epochs (default: the champion's)."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "Challenger learning rate (default: the method's default times the scale)."}
    )
    learning_rate_scale: float = field(default=2.0, metadata={"help": "Challenger rate / the method's default."})
    max_length: int | None = field(default=None, metadata={"help": "Challenger max tokens (default: champion's)."})
    seed: int = field(default=42, metadata={"help": "Seed for the fresh-data split and the replay sample."})


@dataclass
class RetrainDecision:
    """What a retrain did and why; stored on the challenger version and printed by `prefixctl retrain`."""

    task: str
    champion_version: str
    challenger_version: str | None
    promoted: bool
    reason: str
    trigger: str
    champion_scores: dict[str, Any] = field(default_factory=dict)
    challenger_scores: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    drift_verdict: dict[str, Any] | None = None
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RetrainData:
    splits: DataSplits
    holdout: pd.DataFrame
    reference_test: pd.DataFrame
    sizes: dict[str, int]
    since: str | None


def check_cooldown(registry: PrefixRegistry, task: str, policy: RetrainPolicy, now: datetime | None = None) -> None:
    """Raise RetrainSkipped when the task was retrained less than `cooldown_minutes` ago."""
    last = registry.task_tags(task).get(LAST_RETRAIN_TAG)
    if not last or policy.cooldown_minutes <= 0:
        return
    now = now or datetime.now(UTC)
    elapsed = now - datetime.fromisoformat(last)
    if elapsed < timedelta(minutes=policy.cooldown_minutes):
        left = timedelta(minutes=policy.cooldown_minutes) - elapsed
        raise RetrainSkipped(
            f"task {task!r} was retrained at {last}; cooldown of {policy.cooldown_minutes:g} min has "
            f"{int(left.total_seconds())} s left"
        )


def claim_retrain(registry: PrefixRegistry, task: str) -> None:
    """Start the cooldown now, before training, so a second trigger during training is turned away."""
    registry.set_task_tag(task, LAST_RETRAIN_TAG, datetime.now(UTC).isoformat(timespec="seconds"))


def fresh_labelled(log: PredictionLog, task: str, since: datetime | None, limit: int) -> pd.DataFrame:
    """Feedback-labelled predictions (text, label) since `since`, newest `limit`, one row per distinct text."""
    log.flush(timeout=30)
    frame = log.window(task, since=since, labelled_only=True)
    if frame.empty:
        return pd.DataFrame(columns=["text", "label"])
    frame = frame.sort_values("created_at").drop_duplicates("text", keep="last").tail(limit)
    return pd.DataFrame({"text": frame["text"].astype(str), "label": frame["feedback_label"].astype(str)})


def assemble_data(
    registry: PrefixRegistry, champion: PrefixVersion, fresh: pd.DataFrame, policy: RetrainPolicy
) -> RetrainData:
    """Split fresh labels into a held-out judge set and training rows, and add replay of the champion's data."""
    labels = champion.labels
    unknown = sorted(set(fresh["label"]) - set(labels))
    if unknown:
        raise RetrainSkipped(f"feedback labels {unknown} are not labels of {champion.task}: {labels}")
    holdout = _stratified_take(fresh, policy.holdout_fraction, policy.seed)
    rest = fresh.drop(index=holdout.index)
    fresh_validation = _stratified_take(rest, 0.1, policy.seed + 1)
    fresh_train = rest.drop(index=fresh_validation.index)
    reference_train = load_training_split(registry, champion, "train")[["text", "label"]]
    reference_validation = load_training_split(registry, champion, "validation")[["text", "label"]]
    reference_test = load_training_split(registry, champion, "test")[["text", "label"]]
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
    from prefix_registry.training.adapter_files import AdapterManifest

    manifest = AdapterManifest.read(registry.download_version_folder(champion, "adapter"))
    values = {k: v for k, v in manifest.train_config.items()}
    config = TrainConfig.from_stored(values)
    # Scaled from the method's default, not the champion's rate: a chain of retrains must not compound the scale.
    learning_rate = policy.learning_rate or DEFAULT_LEARNING_RATES[config.method] * policy.learning_rate_scale
    return config.replace(
        epochs=policy.epochs, learning_rate=learning_rate, max_length=policy.max_length, seed=policy.seed
    )


def score(registry: PrefixRegistry, version: PrefixVersion, sets: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Metrics of `version` on named labelled sets (the same sets for champion and challenger)."""
    loaded = load_version(registry, version)
    return {
        name: classification_metrics(
            frame["label"].tolist(), loaded.predict(frame["text"].tolist()).predicted, loaded.labels
        )
        for name, frame in sets.items()
    }


def decide(champion: dict[str, Any], challenger: dict[str, Any], policy: RetrainPolicy) -> tuple[bool, str]:
    """Promote only a challenger that wins on fresh data by the margin and keeps the old domain."""
    fresh_gain = challenger["fresh_holdout"]["macro_f1"] - champion["fresh_holdout"]["macro_f1"]
    reference_change = challenger["reference_test"]["macro_f1"] - champion["reference_test"]["macro_f1"]
    if fresh_gain < policy.margin:
        return False, (
            f"challenger gains {fresh_gain:+.3f} macro-F1 on fresh held-out data; {policy.margin:.3f} is required"
        )
    if reference_change < -policy.max_reference_regression:
        return False, (
            f"challenger loses {-reference_change:.3f} macro-F1 on the champion's test data; at most "
            f"{policy.max_reference_regression:.3f} is allowed"
        )
    return True, (
        f"challenger gains {fresh_gain:+.3f} macro-F1 on fresh held-out data "
        f"({reference_change:+.3f} on the champion's test data)"
    )


def retrain(
    registry: PrefixRegistry,
    log: PredictionLog,
    task: str,
    policy: RetrainPolicy | None = None,
    trigger: str = "manual",
    drift_verdict: dict[str, Any] | None = None,
    since: datetime | None = None,
    progress: bool = False,
) -> RetrainDecision:
    """The whole retrain: checks, data, challenger, judgement, decision recorded (and promoted when it wins)."""
    policy = policy or RetrainPolicy()
    check_cooldown(registry, task, policy)
    champion = registry.resolve(task, alias=CHAMPION)
    since = since or fresh_since(champion, drift_verdict)
    fresh = fresh_labelled(log, task, since, policy.max_fresh_labels)
    if len(fresh) < policy.min_fresh_labels:
        raise RetrainSkipped(
            f"task {task!r} has {len(fresh)} fresh feedback label(s) since {since:%Y-%m-%d %H:%M:%S}"
            f"; {policy.min_fresh_labels} are needed to retrain"
        )
    claim_retrain(registry, task)
    data = assemble_data(registry, champion, fresh, policy)
    data.since = since.isoformat()
    outcome = train_challenger(registry, champion, data, policy, trigger, drift_verdict, progress)
    challenger = registry.version(task, outcome.version)
    return judge_and_record(registry, champion, challenger, data, policy, trigger, drift_verdict)


def fresh_since(champion: PrefixVersion, drift_verdict: dict[str, Any] | None) -> datetime:
    """Fresh data starts where the drift episode started, else when the champion was registered."""
    verdict = drift_verdict or {}
    start = verdict.get("drift_started_at") or verdict.get("current", {}).get("from")
    return datetime.fromisoformat(start) if start else champion.created_at


def train_challenger(
    registry: PrefixRegistry,
    champion: PrefixVersion,
    data: RetrainData,
    policy: RetrainPolicy,
    trigger: str,
    drift_verdict: dict[str, Any] | None,
    progress: bool = False,
) -> TrainOutcome:
    config = challenger_config(champion, registry, policy)
    verdict_text = json.dumps(_verdict_brief(drift_verdict), default=str) if drift_verdict else None
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
        trigger=trigger,
        trigger_reason=verdict_text,
        parent=champion,
        warm_start=load_warm_start(registry, champion),
        splits=data.splits,
        extra_evaluations={"fresh_holdout": data.holdout, "reference_test": data.reference_test},
        extra_tags={"data_window_since": data.since or "", "data_sizes": json.dumps(data.sizes)},
        # The traffic the challenger is judged on is also what its monitor should compare new traffic with.
        reference=data.holdout,
        progress=progress,
    )


def judge_and_record(
    registry: PrefixRegistry,
    champion: PrefixVersion,
    challenger: PrefixVersion,
    data: RetrainData,
    policy: RetrainPolicy,
    trigger: str,
    drift_verdict: dict[str, Any] | None,
) -> RetrainDecision:
    sets = {"fresh_holdout": data.holdout, "reference_test": data.reference_test}
    champion_scores = score(registry, champion, sets)
    challenger_scores = score(registry, challenger, sets)
    promoted, reason = decide(champion_scores, challenger_scores, policy)
    promoted, reason = retrain_gate(challenger, promoted, reason, registry.settings)
    decision = RetrainDecision(
        task=champion.task,
        champion_version=champion.version,
        challenger_version=challenger.version,
        promoted=promoted,
        reason=reason,
        trigger=trigger,
        champion_scores=_headline(champion_scores),
        challenger_scores=_headline(challenger_scores),
        data={**data.sizes, "since": data.since},
        drift_verdict=_verdict_brief(drift_verdict),
    )
    registry.set_version_tags(
        champion.task,
        challenger.version,
        {
            DECISION_TAG: "promoted" if promoted else "kept champion",
            "decision_reason": reason[:5000],
            "champion_fresh_macro_f1": f"{champion_scores['fresh_holdout']['macro_f1']:.4f}",
            "challenger_fresh_macro_f1": f"{challenger_scores['fresh_holdout']['macro_f1']:.4f}",
            "compared_with_version": champion.version,
        },
    )
    registry.set_version_description(
        champion.task,
        challenger.version,
        (
            f"{challenger.description} Retrain decision: {'PROMOTED' if promoted else 'kept champion'} - {reason}. "
            f"On the same {data.sizes['fresh_holdout']} fresh held-out texts: champion v{champion.version} macro-F1 "
            f"{champion_scores['fresh_holdout']['macro_f1']:.3f}, challenger "
            f"{challenger_scores['fresh_holdout']['macro_f1']:.3f}."
        ),
    )
    # The champion's scores on the very sets that judged the challenger, in its own run: side by side in the UI.
    registry.log_run_metrics(
        champion.run_id,
        {
            **flat_metrics(champion_scores["fresh_holdout"], "fresh_holdout"),
            **flat_metrics(champion_scores["reference_test"], "reference_test"),
        },
        step=int(challenger.version),
    )
    if promoted:
        registry.promote(champion.task, challenger.version, CHAMPION, reason=f"retrain ({trigger}): {reason}")
    return decision


def notify_decision(decision: RetrainDecision, settings: Any = None) -> None:
    """Tell people what a retrain decided (the alert waits in the outbox if no receiver answers)."""
    from prefix_registry.monitoring.alerts import Alert, send_alert

    title = (
        f"{decision.task}: challenger v{decision.challenger_version} promoted over v{decision.champion_version}"
        if decision.promoted
        else f"{decision.task}: kept champion v{decision.champion_version}; challenger "
        f"v{decision.challenger_version} not promoted"
    )
    send_alert(
        Alert(
            kind="retrain_decision",
            task=decision.task,
            title=title,
            severity="info" if decision.promoted else "warning",
            details={
                "reason": decision.reason,
                "champion": decision.champion_scores,
                "challenger": decision.challenger_scores,
                "data": decision.data,
            },
        ),
        settings=settings,
    )


def _stratified_take(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    parts = [
        group.sample(n=max(1, round(len(group) * fraction)), random_state=seed)
        for _, group in frame.groupby("label", sort=True)
        if len(group) > 1
    ]
    return pd.concat(parts) if parts else frame.iloc[:0]


def _headline(scores: dict[str, Any]) -> dict[str, Any]:
    return {name: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n": m["n"]} for name, m in scores.items()}


def _verdict_brief(verdict: dict[str, Any] | None) -> dict[str, Any] | None:
    if not verdict:
        return None
    keys = (
        "status",
        "drift_detected",
        "drifted_signals",
        "window_sizes",
        "checked_at",
        "current",
        "version",
        "drift_started_at",
        "drifted_windows",
        "mlflow_run_id",
    )
    return {key: verdict.get(key) for key in keys if key in verdict}
