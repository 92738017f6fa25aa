"""Named evaluation sets: every version is scored on sets whose names say what they are, in every run.

    own_test        the version's own test split             dataset `<task>-v<N>-test`
    reference_test  the champion's test split it was judged  dataset `<task>-v<parent>-test`
                    against (a first version: its own split, which is the reference set of its successors)
    fresh_holdout   the fresh held-out traffic of a retrain  dataset `<task>-v<N>-fresh-holdout`

A metric `<set>_macro_f1` always means that set, on every version; the champion's scores on a challenger's sets are
logged on the challenger's run as `champion_<set>_...`, at step 0, next to the challenger's own. Each set is logged
as an MLflow dataset input (name, digest, source); its context lists the metric prefixes it scores, so the MLflow
UI's "Datasets used" says which rows a metric was computed on. Versions stored before this module logged their own
split as `test_...`: `PrefixVersion.from_mlflow` reads those as `own_test_...`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from prefix_registry.registry.gateway import MlflowGateway, RunDataset

OWN_TEST = "own_test"
REFERENCE_TEST = "reference_test"
FRESH_HOLDOUT = "fresh_holdout"
# In the order a shared dataset takes its name from (v2's own split IS its fresh hold-out: named as the hold-out).
EVAL_SETS = (REFERENCE_TEST, FRESH_HOLDOUT, OWN_TEST)
CHAMPION_PREFIX = "champion_"
# Version tag naming the dataset behind a set: `eval_set.reference_test` -> `sentiment-v1-test`.
EVAL_SET_TAG_PREFIX = "eval_set."
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


def version_eval_sets(
    task: str,
    version: str,
    run_id: str,
    frames: dict[str, pd.DataFrame],
    parent: tuple[str, str] | None,
) -> list[EvaluationSet]:
    """The named sets of a new version from its scored frames (`own_test`, and `reference_test`/`fresh_holdout`
    when it was judged on them). `parent` is (version, run id) of the champion it descends from."""
    sets = []
    for role in EVAL_SETS:
        frame = frames.get(role)
        if frame is None:
            continue
        if role == REFERENCE_TEST and parent is not None:
            name, source = f"{task}-v{parent[0]}-test", f"runs:/{parent[1]}/data/test.parquet"
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


def eval_set_tags(sets: list[EvaluationSet]) -> dict[str, str]:
    """Version tags naming each set's dataset (`eval_set.reference_test` -> `sentiment-v1-test`)."""
    names = {s.digest: s.name for s in reversed(sets)}  # the name its dataset input carries (first in EVAL_SETS)
    return {f"{EVAL_SET_TAG_PREFIX}{s.role}": names[s.digest] for s in sets}


def roles_by_digest(run: Any) -> dict[str, str]:
    """{role: dataset digest} of a run's evaluation-set inputs (for checking that a name means one set)."""
    roles: dict[str, str] = {}
    for context, digest in MlflowGateway.run_dataset_contexts(run, SOURCE_TYPE):
        for role in filter(None, context.split(",")):
            roles[role] = digest
    return roles
