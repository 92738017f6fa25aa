"""What the registry says about one version of a task's prefix."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from prefix_registry.kinds import CLASSIFICATION, TaskKind, kind_named
from prefix_registry.training.adapter_integrity import RegisteredIntegrity

# Version tags are of two sorts. What a person reads on the MLflow version page, short and visible: method, base,
# trigger, parent, data window, baseline verdict, and, once they happen, the retrain decision and a rollback. And
# what the product reads back (fingerprints, integrity records, role-named score copies, precision checks, the sets'
# dataset names): stored under `mlflow.prefix_registry.`, a prefix the MLflow UI does not show (it hides every tag
# starting with `mlflow.`), so the version page is not a wall of hashes and numbers. Versions registered before kept
# those under their plain names: `PrefixVersion.from_mlflow` reads both (`with_hidden_names`).
HIDDEN_TAG_ROOT = "mlflow.prefix_registry."
# Before the hidden root, some of the product's tags were already namespaced `prefix_registry.`, the rest plain.
LEGACY_TAG_ROOT = "prefix_registry."


def hidden_tag(name: str) -> str:
    """`name` as a tag the MLflow UI does not show: `adapter_digest` -> `mlflow.prefix_registry.adapter_digest`."""
    return HIDDEN_TAG_ROOT + name


TAG_METHOD = "method"
TAG_BASE = "base"
TAG_BASE_FINGERPRINT = hidden_tag("base_fingerprint")
TAG_DATA_FINGERPRINT = hidden_tag("data_fingerprint")
TAG_DATA_ORIGIN = hidden_tag("data_origin")
TAG_ADAPTER_SHA256 = hidden_tag("adapter_sha256_short")  # for people reading `versions --json`
# The full hash `load_version` checks the downloaded adapter against (the manifest holds it too, but a manifest can be
# replaced together with the weights, so the registry keeps its own copy).
ADAPTER_SHA256_FULL_TAG = hidden_tag("adapter_sha256")
# What every load checks the downloaded adapter folder against (training/adapter_integrity.py): the digest of all its
# files, manifest included; the files' names (to name an extra or missing one); an HMAC of the digest when a signing
# key is set. A version without the digest tag was registered before digests (legacy).
ADAPTER_DIGEST_TAG = hidden_tag("adapter_digest")
ADAPTER_FILES_TAG = hidden_tag("adapter_files")
ADAPTER_SIGNATURE_TAG = hidden_tag("adapter_signature")
# The same for the MLflow model's files around the adapter (registry/mlflow_model.py); a version without them is not
# an MLflow model yet (`prefixctl relog` makes it one). File lists and labels are comma-separated (`list_tag_value`),
# not JSON (versions registered before wrote JSON lists, still read).
MODEL_FILES_TAG = hidden_tag("mlflow_model_files")
MODEL_DIGEST_TAG = hidden_tag("mlflow_model_digest")
MODEL_SIGNATURE_TAG = hidden_tag("mlflow_model_signature")
SHORT_HASH = 12
TAG_TRIGGER = "trigger"
TAG_TRIGGER_REASON = hidden_tag("trigger_reason")  # one line (the description shows it); full JSON: run artifact
TAG_PARENT = "parent_version"
TAG_DATA_WINDOW = "data_window"
TAG_DATA_WINDOW_SINCE = hidden_tag("data_window_since")  # a retrain's fresh feedback: since when (ISO time)
TAG_ROLLED_BACK = "rolled_back"  # "from champion to v1 at <time>" once a rollback moved an alias off the version
TAG_RETRAIN_DECISION = "retrain_decision"  # a RetrainOutcome (below)
TAG_LABELS = hidden_tag("labels")
TAG_KIND = hidden_tag("kind")  # the task kind's name (kinds/); a version without it is classification
# Role-named copies of the headline scores, `<root>metric.<role>_<name>` (the run's `eval/<set>/<name>` metrics are
# the scores; these name them by the role the set plays for this version). A version without them reads its run's
# metrics (`PrefixVersion.from_mlflow(..., run_metrics=...)`).
METRIC_TAG_PREFIX = hidden_tag("metric.")
# The linear-probe baseline of the version's own split (registry/baseline_gate.py reads them back).
TAG_BASELINE = "baseline"  # "beats" | "below": own-test score against the baseline's, on the kind's decision metric
# Classification's (a version of another kind asks its kind: `version.kind.baseline_metric`, `.version_metric`).
BASELINE_PROBE_METRIC = CLASSIFICATION.baseline_metric  # the probe on the version's own test split
BASELINE_MAJORITY_METRIC = "baseline_majority_rate"
VERSION_METRIC = CLASSIFICATION.version_metric
# Versions registered before evaluation sets were named logged their own test split as `test_...`.
LEGACY_OWN_TEST_PREFIX = "test_"
OWN_TEST_PREFIX = "own_test_"
# Low-precision checks (registry/precision_check.py): `<root>precision.<fp32|bf16|int8>.<figure>`.
TAG_PRECISION_PREFIX = hidden_tag("precision.")
# The tags a person reads on the version page; every other tag the product writes is hidden (tests check this).
VISIBLE_TAGS = frozenset(
    {
        TAG_METHOD,
        TAG_BASE,
        TAG_TRIGGER,
        TAG_PARENT,
        TAG_DATA_WINDOW,
        TAG_BASELINE,
        TAG_RETRAIN_DECISION,
        TAG_ROLLED_BACK,
    }
)
# Plain names (and prefixes) the product's hidden tags had before the hidden root.
_LEGACY_PLAIN_NAMES = frozenset(
    {
        "base_fingerprint",
        "data_fingerprint",
        "data_origin",
        "data_window_since",
        "trigger_reason",
        "labels",
        "kind",
        "compared_with_version",
        "decision_reason",
        "sweep_run_id",
        "sweep_trial",
    }
)
_LEGACY_PREFIXES = ("metric.", "precision.", "eval_set.")


def with_hidden_names(tags: Mapping[str, str]) -> dict[str, str]:
    """A version's tags with every legacy name of a hidden tag under its hidden name (a hidden tag that is also set
    wins). Legacy: `metric.own_test_macro_f1`, `prefix_registry.adapter_digest`, `adapter_sha256` (the short one)."""
    found = dict(tags)
    for key, value in tags.items():
        if key.startswith(HIDDEN_TAG_ROOT):
            continue
        if key.startswith(LEGACY_TAG_ROOT):
            found.setdefault(hidden_tag(key.removeprefix(LEGACY_TAG_ROOT)), value)
        elif key == "adapter_sha256":
            found.setdefault(TAG_ADAPTER_SHA256, value)
        elif key in _LEGACY_PLAIN_NAMES or key.startswith(_LEGACY_PREFIXES):
            found.setdefault(hidden_tag(key), value)
    return found


class RetrainOutcome(StrEnum):
    """What a retrain decided about its challenger (or that it trained none).

    The value is what the challenger's `retrain_decision` tag, its comparison card and `prefixctl compare` say, as
    before this enum existed; `slug` is the same without spaces, as Prefect tags (`decision:kept-champion`) and the
    monitoring run's `caused_retrain_run_decision` tag have always written it.
    """

    PROMOTED = "promoted"
    KEPT_CHAMPION = "kept champion"
    # The challenger won, and its policy (`promotion: shadow | canary`) rolls it out instead of promoting it: the
    # rollout judge later promotes it ("promoted") or rolls it back ("rollout rolled back").
    ROLLOUT_STARTED = "rollout started"
    ROLLOUT_ROLLED_BACK = "rollout rolled back"
    # No challenger was trained (cooldown, another retrain running, too few labels): never a version's tag.
    SKIPPED = "skipped"
    # The tag of a promoted version while it is rolled back ("promoted" again once it is promoted again).
    PROMOTED_THEN_ROLLED_BACK = "promoted, then rolled back"

    @property
    def slug(self) -> str:
        return self.value.replace(", ", "-").replace(" ", "-")


PROMOTED_THEN_ROLLED_BACK = RetrainOutcome.PROMOTED_THEN_ROLLED_BACK


@dataclass(frozen=True)
class PrefixVersion:
    """One registered adapter of a task: its lineage, integrity data, headline metrics and aliases."""

    task: str
    version: str
    run_id: str
    source: str
    aliases: list[str]
    method: str
    base: str
    base_fingerprint: str
    adapter_sha256: str
    trigger: str
    parent_version: str | None
    created_at: datetime
    description: str = ""
    labels: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> TaskKind:
        """The task kind the version was trained as (classification when it recorded none)."""
        return kind_named(self.tags.get(TAG_KIND))

    @property
    def integrity(self) -> RegisteredIntegrity:
        """What the registry recorded about this version's adapter folder, to check a download against."""
        return RegisteredIntegrity(
            digest=self.tags.get(ADAPTER_DIGEST_TAG) or None,
            files=tuple(list_from_tag(self.tags.get(ADAPTER_FILES_TAG))),
            signature=self.tags.get(ADAPTER_SIGNATURE_TAG) or None,
            adapter_sha256=self.tags.get(ADAPTER_SHA256_FULL_TAG) or None,
            labels=tuple(self.labels),
            model_files=tuple(name for name in self.tags.get(MODEL_FILES_TAG, "").split(",") if name),
            model_digest=self.tags.get(MODEL_DIGEST_TAG) or None,
            model_signature=self.tags.get(MODEL_SIGNATURE_TAG) or None,
        )

    @property
    def is_mlflow_model(self) -> bool:
        """Whether the version's folder holds its MLflow model (registered with one, or relogged)."""
        return bool(self.tags.get(MODEL_DIGEST_TAG))

    @property
    def beats_baseline(self) -> bool | None:
        """Whether the own-test score beats the baseline's on the same split (classification: macro-F1 against the
        linear probe's); None when no baseline was measured (versions registered before baselines existed)."""
        kind = self.kind
        probe, own = self.metrics.get(kind.baseline_metric), self.metrics.get(kind.version_metric)
        if probe is None or own is None:
            return None
        return kind.better(own, probe)

    @property
    def precision_checks(self) -> dict[str, dict[str, Any]]:
        """The low-precision checks stored on the version, by precision, e.g. `{"fp32": {"macro_f1": 0.712, ...},
        "int8": {"macro_f1": 0.705, "loss_points": 0.73, "passed": False, "engine": "..."}}`; empty when unchecked."""
        found: dict[str, dict[str, Any]] = {}
        for key, value in self.tags.items():
            if not key.startswith(TAG_PRECISION_PREFIX) or key.count(".") != TAG_PRECISION_PREFIX.count(".") + 1:
                continue
            precision, name = key.removeprefix(TAG_PRECISION_PREFIX).split(".")
            entry = found.setdefault(precision, {})
            if name == "passed":
                entry[name] = value == "true"
            elif name == "engine":
                entry[name] = value
            else:
                try:
                    entry[name] = float(value)
                except ValueError:
                    continue
        return found

    def summary(self) -> dict[str, Any]:
        """JSON-ready view, as printed by `prefixctl versions --json`."""
        values = asdict(self)
        values["created_at"] = self.created_at.isoformat(timespec="seconds")
        values.pop("tags")
        kind = self.kind
        values["baseline"] = {
            f"probe_test_{kind.decision_metric}": self.metrics.get(kind.baseline_metric),
            "majority_rate": self.metrics.get(BASELINE_MAJORITY_METRIC),
            "beats_baseline": self.beats_baseline,
        }
        values["precision"] = self.precision_checks
        return values

    @classmethod
    def from_mlflow(
        cls, model_version: Any, aliases: list[str], run_metrics: Mapping[str, float] | None = None
    ) -> PrefixVersion:
        """The version of an MLflow model version; its metrics are the role-named score tags (`METRIC_TAG_PREFIX`)
        when it has them, else `run_metrics` (its run's metrics) of the names its kind keeps (`tagged_metric`)."""
        tags = with_hidden_names(model_version.tags or {})
        kind = kind_named(tags.get(TAG_KIND))
        metrics = {}
        for key, value in tags.items():
            if key.startswith(METRIC_TAG_PREFIX):
                try:
                    metrics[key.removeprefix(METRIC_TAG_PREFIX)] = float(value)
                except ValueError:
                    continue
        if not metrics:
            metrics = {name: float(value) for name, value in (run_metrics or {}).items() if kind.tagged_metric(name)}
        for key in [k for k in metrics if k.startswith(LEGACY_OWN_TEST_PREFIX)]:
            metrics.setdefault(OWN_TEST_PREFIX + key.removeprefix(LEGACY_OWN_TEST_PREFIX), metrics[key])
        return cls(
            task=model_version.name,
            version=str(model_version.version),
            run_id=model_version.run_id or "",
            source=model_version.source,
            aliases=sorted(aliases),
            method=tags.get(TAG_METHOD, ""),
            base=tags.get(TAG_BASE, ""),
            base_fingerprint=tags.get(TAG_BASE_FINGERPRINT, ""),
            adapter_sha256=tags.get(ADAPTER_SHA256_FULL_TAG) or tags.get(TAG_ADAPTER_SHA256, ""),
            trigger=tags.get(TAG_TRIGGER, ""),
            parent_version=tags.get(TAG_PARENT) or None,
            created_at=datetime.fromtimestamp(model_version.creation_timestamp / 1000, tz=UTC),
            description=model_version.description or "",
            labels=list_from_tag(tags.get(TAG_LABELS)),
            metrics=metrics,
            tags=tags,
        )


def has_metric_tags(tags: Mapping[str, str]) -> bool:
    """Whether a version keeps its metrics as role-named score tags (else they are read from its run)."""
    return any(key.startswith(METRIC_TAG_PREFIX) for key in with_hidden_names(tags))


def integrity_tags(record: RegisteredIntegrity) -> dict[str, str]:
    """The version tags that keep `record` (see `PrefixVersion.integrity`)."""
    tags = {ADAPTER_DIGEST_TAG: record.digest or "", ADAPTER_FILES_TAG: list_tag_value(record.files)}
    if record.signature:
        tags[ADAPTER_SIGNATURE_TAG] = record.signature
    return {**tags, **model_integrity_tags(record)}


def model_integrity_tags(record: RegisteredIntegrity) -> dict[str, str]:
    """The version tags that keep the record of `record`'s MLflow model files (none when it has none)."""
    if record.model_digest is None:
        return {}
    tags = {MODEL_DIGEST_TAG: record.model_digest, MODEL_FILES_TAG: ",".join(record.model_files)}
    if record.model_signature:
        tags[MODEL_SIGNATURE_TAG] = record.model_signature
    return tags


def list_tag_value(items: Iterable[str]) -> str:
    """`negative,positive`: a list as one readable tag value, never read as JSON. A `%` or `,` inside an item, and
    a `[` or `{` opening one, is %-escaped."""
    return ",".join(_escaped(item) for item in items)


def _escaped(item: str) -> str:
    item = item.replace("%", "%25").replace(",", "%2C")
    return {"[": "%5B", "{": "%7B"}.get(item[:1], item[:1]) + item[1:]


def list_from_tag(value: str | None) -> list[str]:
    """The list `list_tag_value` wrote, or the JSON list versions registered before wrote; [] when unreadable."""
    if not value:
        return []
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return []
        return [str(item) for item in parsed] if isinstance(parsed, list) else []
    return [urllib.parse.unquote(item) for item in value.split(",")]
