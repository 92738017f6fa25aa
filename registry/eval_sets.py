"""Named evaluation sets: every version is scored on sets whose names say what they are, in every run.

    own_test        the version's own test split             dataset `<task>-v<N>-test`
    reference_test  the champion's test split it was judged  dataset: the name the champion's run gives its own test
                    against (a first version: its own split, split (`<task>-v<parent>-test`, or its fresh hold-out's
                    which is the reference set of its successors)  name when that split is its fresh hold-out)
    fresh_holdout   the fresh held-out traffic of a retrain  dataset `<task>-v<N>-fresh-holdout`

A score on a set is a metric of the scored version's OWN run named by the set's dataset, logged once per set at step
0: `eval/<dataset>/<metric>` (v1's `eval/sentiment-v1-test/macro_f1` is v1's own score on its test split, and v2's
score on the same set, its reference set, under the same name on v2's run). Roles that are one set (a retrained
version's own test split is its fresh hold-out) are one dataset, named in the order of EVAL_SETS, logged once. When a
retrain judges the champion on the challenger's sets, the champion's scores go to the champion's run under the same
names, with those sets added to its dataset inputs: MLflow's Compare shows both versions on one row per set.

What is not a score on a named set carries its set in its name too (see the `*_metric_name` helpers below):
the linear-probe baseline `baseline/<dataset>/<figure>`, the per-evaluation training curves
`curve/<task>-<split>-<digest>/<figure>` (step = optimizer step; the split's content digest names it, because a
run trains before it knows its version), and figures of no set (`train_seconds`, `optimizer_steps`) keep plain names.

Each set is logged as an MLflow dataset input (name, digest, source); its context lists the roles it plays, so the
MLflow UI's "Datasets used" says which rows a metric was computed on. The version's hidden tags keep role-named
copies (`mlflow.prefix_registry.metric.own_test_...`) for `PrefixVersion.metrics` readers. Versions stored before
this module logged their own split as `test_...`: `PrefixVersion.from_mlflow` reads those as `own_test_...`; versions
stored before `eval/` names logged `<role>_<metric>` and `champion_<role>_<metric>`: `prefixctl compare` reads those.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from prefix_registry.kinds import TaskKind
from prefix_registry.registry.gateway import MlflowGateway, RunDataset
from prefix_registry.registry.versions import hidden_tag

if TYPE_CHECKING:
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.registry.versions import PrefixVersion

OWN_TEST = "own_test"
REFERENCE_TEST = "reference_test"
FRESH_HOLDOUT = "fresh_holdout"
# In the order a shared dataset takes its name from (v2's own split IS its fresh hold-out: named as the hold-out).
EVAL_SETS = (REFERENCE_TEST, FRESH_HOLDOUT, OWN_TEST)
# Before `eval/` names: the champion's scores on a challenger's sets, on the challenger's run (read as a fallback).
LEGACY_CHAMPION_PREFIX = "champion_"
EVAL_METRIC_ROOT = "eval"
BASELINE_METRIC_ROOT = "baseline"
CURVE_METRIC_ROOT = "curve"
# The splits a baseline's figures are computed on (`Baseline.metrics_by_split`); "" for figures of no split.
BASELINE_TEST_SPLIT = "test"
BASELINE_VALIDATION_SPLIT = "validation"
# Version tag naming the dataset behind a set: `eval_set.reference_test` -> `sentiment-v1-test`.
EVAL_SET_TAG_PREFIX = hidden_tag("eval_set.")
SOURCE_TYPE = "prefix-registry"


@dataclass(frozen=True)
class EvaluationSet:
    """One labelled set a version was scored on: its role (the metric prefix), dataset name and rows."""

    role: str
    name: str
    frame: pd.DataFrame
    source: str

    @property
    def digest(self) -> str:
        return frame_digest(self.frame)


def frame_digest(frame: pd.DataFrame) -> str:
    """A short content hash of the (text, label) rows, in order: equal sets have equal digests on every run."""
    rows = frame[["text", "label"]].astype(str).itertuples(index=False, name=None)
    digest = hashlib.sha256()
    for text, label in rows:
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()[:10]


def eval_metric_name(dataset: str, metric: str) -> str:
    """The run metric of a score on a named set: `eval/sentiment-v1-test/macro_f1`."""
    return f"{EVAL_METRIC_ROOT}/{dataset}/{metric}"


def eval_metrics(kind: TaskKind, dataset: str, scores: dict[str, Any]) -> dict[str, float]:
    """Every number of `kind`'s `scores` on `dataset`, as run metrics `eval/<dataset>/<name>`."""
    return kind.flat_metrics(scores, f"{EVAL_METRIC_ROOT}/{dataset}", "/")


def split_set_name(task: str, split: str, frame: pd.DataFrame) -> str:
    """A training split's name before the run has a version: `<task>-<split>-<content digest>`."""
    return f"{task}-{split}-{frame_digest(frame)}"


def curve_metric_name(set_name: str, metric: str) -> str:
    """A per-evaluation training curve: `curve/sentiment-validation-3fa2c19e0b/macro_f1`."""
    return f"{CURVE_METRIC_ROOT}/{set_name}/{metric}"


def reference_set_name(task: str, parent_version: str, parent_tags: dict[str, str]) -> str:
    """The dataset name the parent's run gives its own test split (a successor's reference set): what its
    `eval_set.own_test` tag says, else `<task>-v<parent>-test`."""
    return parent_tags.get(f"{EVAL_SET_TAG_PREFIX}{OWN_TEST}") or f"{task}-v{parent_version}-test"


def version_eval_sets(
    task: str,
    version: str,
    run_id: str,
    frames: dict[str, pd.DataFrame],
    parent: tuple[str, str] | None,
) -> list[EvaluationSet]:
    """The named sets of a new version from its scored frames (`own_test`, and `reference_test`/`fresh_holdout`
    when it was judged on them). `parent` is (the dataset name of its own test split, run id) of the champion it
    descends from (see `reference_set_name`)."""
    sets = []
    for role in EVAL_SETS:
        frame = frames.get(role)
        if frame is None:
            continue
        if role == REFERENCE_TEST and parent is not None:
            name, source = parent[0], f"runs:/{parent[1]}/data/test.parquet"
        elif role == FRESH_HOLDOUT:
            name, source = f"{task}-v{version}-fresh-holdout", f"runs:/{run_id}/data/test.parquet"
        else:
            name, source = f"{task}-v{version}-test", f"runs:/{run_id}/data/test.parquet"
        sets.append(EvaluationSet(role, name, frame, source))
    return sets


def dataset_inputs(sets: list[EvaluationSet]) -> list[RunDataset]:
    """The run's dataset inputs, one per distinct set (same rows = one dataset, its context listing every role)."""
    grouped: dict[str, list[EvaluationSet]] = {}
    for evaluation_set in sets:
        grouped.setdefault(evaluation_set.digest, []).append(evaluation_set)
    inputs = []
    for digest, group in grouped.items():
        first = group[0]
        schema = {"mlflow_colspec": [{"type": "string", "name": "text"}, {"type": "string", "name": "label"}]}
        profile = {"num_rows": len(first.frame), "labels": first.frame["label"].astype(str).value_counts().to_dict()}
        inputs.append(
            RunDataset(
                name=first.name,
                digest=digest,
                source_type=SOURCE_TYPE,
                source=json.dumps({"uri": first.source}),
                schema=json.dumps(schema),
                profile=json.dumps(profile),
                context=",".join(s.role for s in group),
            )
        )
    return inputs


def set_names(sets: list[EvaluationSet]) -> dict[str, str]:
    """{role: dataset name}, a set's roles all taking the name its dataset input carries (first in EVAL_SETS)."""
    names = {s.digest: s.name for s in reversed(sets)}
    return {s.role: names[s.digest] for s in sets}


def eval_set_tags(sets: list[EvaluationSet]) -> dict[str, str]:
    """Version tags naming each set's dataset (`eval_set.reference_test` -> `sentiment-v1-test`)."""
    return {f"{EVAL_SET_TAG_PREFIX}{role}": name for role, name in set_names(sets).items()}


def scores_by_set(kind: TaskKind, sets: list[EvaluationSet], scores: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The run metrics of a version's scores by role (`own_test`, `reference_test`, ...): `eval/<dataset>/...`, one
    name per set, each set logged once however many roles it plays."""
    metrics: dict[str, float] = {}
    logged: set[str] = set()
    for role, name in set_names(sets).items():
        if name in logged or role not in scores:
            continue
        logged.add(name)
        metrics.update(eval_metrics(kind, name, scores[role]))
    return metrics


def baseline_metrics(split_figures: dict[str, dict[str, float]], split_names: dict[str, str]) -> dict[str, float]:
    """A baseline's figures by split (`Baseline.metrics_by_split`) as run metrics `baseline/<dataset>/<figure>`,
    `baseline/<figure>` for figures of no split. `split_names`: {split: dataset name}."""
    metrics: dict[str, float] = {}
    for split, figures in split_figures.items():
        if split and split not in split_names:
            raise ValueError(f"baseline figures of split {split!r}: expected one of {sorted(split_names)} or ''")
        root = f"{BASELINE_METRIC_ROOT}/{split_names[split]}" if split else BASELINE_METRIC_ROOT
        metrics.update({f"{root}/{name}": float(value) for name, value in figures.items()})
    return metrics


def roles_by_digest(run: Any) -> dict[str, str]:
    """{role: dataset digest} of a run's evaluation-set inputs (for checking that a name means one set)."""
    roles: dict[str, str] = {}
    for context, digest in MlflowGateway.run_dataset_contexts(run, SOURCE_TYPE):
        for role in filter(None, context.split(",")):
            roles[role] = digest
    return roles


def log_champion_scores(
    registry: PrefixRegistry,
    champion: PrefixVersion,
    challenger: PrefixVersion,
    frames: dict[str, pd.DataFrame],
    scores: dict[str, dict[str, Any]],
) -> dict[str, float]:
    """Log the champion's `scores` on the challenger's judge sets (by role, `frames` their rows) on the champion's
    own run, named as the challenger names them (`eval/<dataset>/...`, step 0), and add the sets it lacks to its
    dataset inputs. A set the champion's run already has scores on (its own test split: the reference set) keeps
    them: one value per name. Returns the metrics logged."""
    run = registry.run(champion.run_id)
    already = set(run.data.metrics)
    known = {digest for _, digest in MlflowGateway.run_dataset_contexts(run, SOURCE_TYPE)}
    metrics: dict[str, float] = {}
    added: list[EvaluationSet] = []
    for role, frame in frames.items():
        name = challenger.tags.get(f"{EVAL_SET_TAG_PREFIX}{role}")
        if name is None or role not in scores:
            continue  # a challenger registered without named sets: nothing to name the score by
        figures = eval_metrics(champion.kind, name, scores[role])
        if already & set(figures):
            continue
        metrics.update(figures)
        owner = champion if role == REFERENCE_TEST else challenger  # whose stored test split holds the rows
        judged = EvaluationSet(role, name, frame, f"runs:/{owner.run_id}/data/test.parquet")
        if judged.digest not in known:
            added.append(judged)
    if metrics:
        registry.log_run_metrics(champion.run_id, metrics, step=0)
    if added:
        registry.log_dataset_inputs(champion.run_id, dataset_inputs(added))
    return metrics
