"""Before a version serves below fp32: its own test split, scored at fp32 and at the lower precision.

Both scores come from the same forward engine (only the backbone's precision differs), on the version's own test
split, on its kind's decision metric (classification: macro-F1). A version passes when the lower precision loses at
most `tolerance_points` (0.5: half a point of macro-F1, 0.005). Scores are kept as version tags, so that a restart
or a second server does not score again and the MLflow version page shows them:

    precision.fp32.macro_f1   0.7123          precision.int8.macro_f1    0.7050
    precision.fp32.engine     <what scored>   precision.int8.engine      <what scored>
    precision.int8.loss_points  0.73          precision.int8.passed      false   (at the tolerance of that check)

A stored score is reused only when it was measured by the same engine (base fingerprint, library versions, the
CPU's low-precision instructions); pass or fail is decided anew against the tolerance in force.

A version without a stored test split (registered before splits were kept) serves at fp32 with a warning: nothing
says what a lower precision would cost it, and serving it unchecked would break the promise of the check.

    choice = choose_precision(registry, version, attached, Precision.AUTO, tolerance_points=0.5)
    choice.served            # Precision.INT8 when the CPU has VNNI/AMX and int8 lost <= 0.5 points
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import pandas as pd
import torch

from prefix_registry.errors import PrefixRegistryError, RegistryError, RegistryUnavailable, first_line
from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.engine import head_outputs
from prefix_registry.inference.onnx_backbone import INT8_FORMAT
from prefix_registry.inference.precision import CpuSupport, Precision, fallbacks
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.versions import TAG_PRECISION_PREFIX, PrefixVersion

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE_POINTS = 0.5


class NoTestSplit(RegistryError):
    """A version has no stored test split to check a lower precision on."""


def tag(precision: Precision, name: str) -> str:
    """The version tag of one figure of a precision's check: `precision.int8.macro_f1`."""
    return f"{TAG_PRECISION_PREFIX}{precision.value}.{name}"


@dataclass(frozen=True)
class PrecisionCheck:
    """A version's own-test score at fp32 and at a lower precision, on the kind's decision metric.

    `loss_points`: how much worse the lower precision is, in points (hundredths) of the metric, in the metric's own
    direction (negative: it did better). `reused`: read from the version's tags rather than scored now.
    """

    task: str
    version: str
    precision: Precision
    metric: str
    fp32_score: float
    score: float
    loss_points: float
    tolerance_points: float
    reused: bool = False

    @property
    def passed(self) -> bool:
        return self.loss_points <= self.tolerance_points

    def describe(self) -> str:
        verdict = "passed" if self.passed else "failed"
        scores = f"{self.precision} {self.metric} {self.score:.4f} vs fp32 {self.fp32_score:.4f}"
        limit = f"at most -{self.tolerance_points:.2f} allowed"
        return f"{self.task} v{self.version}: {scores} ({-self.loss_points:+.2f} points, {limit}): {verdict}"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a version serves at, and why: the checks made (fastest first) and any fallback's reason."""

    requested: Precision
    served: Precision
    checks: tuple[PrecisionCheck, ...] = ()
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fell_back(self) -> bool:
        """Whether the version serves slower than asked (AUTO: slower than the fastest precision tried)."""
        return bool(self.reasons)


def engine_key(attached: AttachedPrefix, precision: Precision, cpu: CpuSupport) -> str:
    """What a score at `precision` depends on besides the version: a stored score is reused only under the same."""
    base = attached.base.fingerprint[:16]
    torch_version = torch.__version__.split("+")[0]
    if precision is Precision.FP32:
        return f"{base} torch-{torch_version} fp32"
    if precision is Precision.BF16:
        return f"{base} torch-{torch_version} autocast-bf16 cpu:{cpu.name}"
    return f"{base} onnx-int8-format-{INT8_FORMAT} onnxruntime-{_version('onnxruntime')} dynamic-int8 cpu:{cpu.name}"


def check_precision(
    registry: PrefixRegistry,
    version: PrefixVersion,
    attached: AttachedPrefix,
    precision: Precision,
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    cpu: CpuSupport | None = None,
    batch_size: int = 32,
) -> PrecisionCheck:
    """Score `version`'s own test split at fp32 and at `precision` (bf16 or int8) with the serving engine, or reuse
    the scores stored as its tags by the same engine; store what was scored.

    Raises NoTestSplit when the version has no stored test split; BaseModelError when the precision cannot be built
    for the version's base.
    """
    if precision in (Precision.FP32, Precision.AUTO):
        raise ValueError(f"a check compares fp32 with bf16 or int8, got {precision}")
    cpu = cpu or CpuSupport.detect()
    kind = version.kind
    metric = kind.decision_metric
    keys = {p: engine_key(attached, p, cpu) for p in (Precision.FP32, precision)}
    stored = _stored_scores(version, metric, keys)
    reused = len(stored) == len(keys)
    if not reused:
        frame = _test_split(registry, version)
        texts, truths = frame["text"].astype(str).tolist(), frame["label"].astype(str).tolist()
        for p in keys:
            if p not in stored:
                outputs = head_outputs(attached.at(p), texts, batch_size=batch_size).numpy()
                predicted = kind.predicted(outputs, attached.labels)
                stored[p] = float(kind.metrics(truths, predicted, attached.labels)[metric])
    fp32_score, score = stored[Precision.FP32], stored[precision]
    check = PrecisionCheck(
        task=version.task,
        version=version.version,
        precision=precision,
        metric=metric,
        fp32_score=fp32_score,
        score=score,
        loss_points=-kind.gain(score, fp32_score) * 100,
        tolerance_points=tolerance_points,
        reused=reused,
    )
    if not reused or version.tags.get(tag(precision, "passed")) != _flag(check.passed):
        _store(registry, version, check, keys)  # new scores, or a verdict changed by another tolerance
    return check


def choose_precision(
    registry: PrefixRegistry,
    version: PrefixVersion,
    attached: AttachedPrefix,
    requested: Precision,
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    cpu: CpuSupport | None = None,
) -> PrecisionChoice:
    """The fastest precision, from `requested` up (precision.fallbacks), at which `version` passes its check;
    fp32 needs none. Every failure on the way (a lost check, a base whose int8 graph cannot be built, no test
    split) is a reason in the choice, for serving to warn about and count."""
    cpu = cpu or CpuSupport.detect()
    checks: list[PrecisionCheck] = []
    reasons: list[str] = []
    for precision in fallbacks(requested, cpu):
        if precision is Precision.FP32:
            return PrecisionChoice(requested, Precision.FP32, tuple(checks), tuple(reasons))
        try:
            check = check_precision(registry, version, attached, precision, tolerance_points, cpu)
        except NoTestSplit as error:
            reasons.append(str(error))
            break
        except Exception as error:
            # A base whose graph cannot be built or run at this precision still serves, one precision up.
            shown = (
                first_line(error)
                if isinstance(error, PrefixRegistryError)
                else f"{type(error).__name__}: {first_line(error)}"
            )
            reasons.append(f"{precision} unavailable for {version.task} v{version.version}: {shown[:300]}")
            continue
        checks.append(check)
        if check.passed:
            return PrecisionChoice(requested, precision, tuple(checks), tuple(reasons))
        reasons.append(check.describe())
    return PrecisionChoice(requested, Precision.FP32, tuple(checks), tuple(reasons))


def _stored_scores(version: PrefixVersion, metric: str, keys: dict[Precision, str]) -> dict[Precision, float]:
    scores = {}
    for precision, key in keys.items():
        value = version.tags.get(tag(precision, metric))
        if value is not None and version.tags.get(tag(precision, "engine")) == key:
            try:
                scores[precision] = float(value)
            except ValueError:
                continue
    return scores


def _store(registry: PrefixRegistry, version: PrefixVersion, check: PrecisionCheck, keys: dict[Precision, str]) -> None:
    """Keep the check's scores on the version; a registry that refuses the write (read-only credentials) costs a
    re-score on the next start, never the serving."""
    tags = {
        tag(Precision.FP32, check.metric): f"{check.fp32_score:.4f}",
        tag(Precision.FP32, "engine"): keys[Precision.FP32],
        tag(check.precision, check.metric): f"{check.score:.4f}",
        tag(check.precision, "engine"): keys[check.precision],
        tag(check.precision, "loss_points"): f"{check.loss_points:.2f}",
        tag(check.precision, "passed"): _flag(check.passed),
    }
    try:
        registry.set_version_tags(version.task, version.version, tags)
    except Exception as error:
        logger.warning("%s v%s: precision check not stored: %s", version.task, version.version, first_line(error))


def _test_split(registry: PrefixRegistry, version: PrefixVersion) -> pd.DataFrame:
    try:
        folder = registry.download_version_folder(version, "data")
        frame = pd.read_parquet(folder / "test.parquet")
    except RegistryUnavailable as error:
        raise NoTestSplit(
            f"{version.task} v{version.version}: its test split could not be read to check a lower precision "
            f"({first_line(error)}); it serves at fp32"
        ) from None
    except (RegistryError, OSError) as error:
        raise NoTestSplit(
            f"{version.task} v{version.version} has no stored test split to check a lower precision on "
            f"({first_line(error)}); it serves at fp32"
        ) from None
    if frame.empty:
        raise NoTestSplit(f"{version.task} v{version.version}'s stored test split is empty; it serves at fp32")
    return frame


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _version(package: str) -> str:
    try:
        return package_version(package)
    except PackageNotFoundError:
        return "unknown"
