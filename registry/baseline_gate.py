"""The baseline gate: a version becomes champion only if it beats the linear probe of its own split, unless a
person forces it with a reason, which is then kept in the alias history.

    version tags (metric.own_test_<decision metric>, metric.baseline_probe_test_<decision metric>, named by the
    version's kind) --check_baseline--> BaselineVerdict
    promote(champion) --admit_champion--> the reason to record, or BelowBaseline (one line, exit 2)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prefix_registry.errors import BelowBaseline, ConfigError
from prefix_registry.registry.aliases import CHAMPION
from prefix_registry.registry.versions import BASELINE_MAJORITY_METRIC, PrefixVersion
from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

FORCED_PREFIX = "forced below baseline"


@dataclass(frozen=True)
class BaselineVerdict:
    """A version's own-test score against its baseline's on the same split, on the decision metric of its kind
    (classification: macro-F1 against the linear probe's); `beats` is None when unmeasured."""

    version: str
    macro_f1: float | None  # the version's own-test score on `metric` (the name the classification kind gave it)
    probe_macro_f1: float | None  # the baseline's
    majority_rate: float | None
    beats: bool | None
    metric: str = "macro-F1"  # the decision metric as people read it
    baseline: str = "linear probe"  # what the version is judged against, as people read it

    def describe(self) -> str:
        if self.beats is None:
            return f"version {self.version} has no measured baseline"
        relation = ">" if self.beats else "<="
        majority = f", majority-class rate {self.majority_rate:.3f}" if self.majority_rate is not None else ""
        return (
            f"version {self.version} test {self.metric} {self.macro_f1:.3f} {relation} {self.baseline} "
            f"{self.probe_macro_f1:.3f}{majority}"
        )


def check_baseline(version: PrefixVersion) -> BaselineVerdict:
    kind = version.kind
    return BaselineVerdict(
        version=version.version,
        macro_f1=version.metrics.get(kind.version_metric),
        probe_macro_f1=version.metrics.get(kind.baseline_metric),
        majority_rate=version.metrics.get(BASELINE_MAJORITY_METRIC),
        beats=version.beats_baseline,
        metric=kind.label,
        baseline=kind.baseline_label,
    )


def admit_champion(
    version: PrefixVersion, alias: str, reason: str | None, force: bool, settings: Settings
) -> str | None:
    """The reason to record for pointing `alias` at `version`, or BelowBaseline when the gate refuses.

    Only the champion (the alias that serves) is gated; other aliases, such as a challenger under trial, are free.
    A version without a measured baseline passes: it predates baselines, and refusing it would strand old registries.
    """
    if force and not (reason and reason.strip()):
        raise ConfigError('--force needs --reason "...": the reason is kept in the alias history')
    if alias != CHAMPION:
        return reason
    verdict = check_baseline(version)
    if verdict.beats is not False:
        return reason
    if force:
        return f"{FORCED_PREFIX} ({verdict.describe()}): {reason}"
    message = (
        f"task {version.task!r}: {verdict.describe()}; expected a version that beats its baseline "
        '(pass --force --reason "..." to promote it anyway)'
    )
    if settings.baseline_gate == "warn":
        logger.warning("%s; promoted because PREFIX_REGISTRY_BASELINE_GATE=warn", message)
        return reason
    raise BelowBaseline(message)


def retrain_gate(challenger: PrefixVersion, promoted: bool, reason: str, settings: Settings) -> tuple[bool, str]:
    """The retraining decision after the baseline gate: a winning challenger below its baseline is kept out."""
    verdict = check_baseline(challenger)
    if not promoted or verdict.beats is not False or settings.baseline_gate == "warn":
        return promoted, reason
    return False, f"challenger beat the champion but not its own baseline: {verdict.describe()}"
