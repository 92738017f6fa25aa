"""Specification of the baseline gate: a champion must beat the linear probe of its own split, unless forced with
a reason that the alias history keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefix_registry.errors import BelowBaseline, ConfigError
from prefix_registry.registry.baseline_gate import FORCED_PREFIX, retrain_gate
from prefix_registry.registry.runs import RecordedRun
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.registry.versions import BASELINE_MAJORITY_METRIC, BASELINE_PROBE_METRIC, TAG_BASELINE
from prefix_registry.settings import Settings
from tests.conftest import tiny_config, tiny_data

TASK = "gated"


@pytest.fixture
def gated(home: Path, monkeypatch: pytest.MonkeyPatch) -> PrefixRegistry:
    """Task `gated`: v1 beats its probe (0.80 > 0.70), v2 does not (0.60 <= 0.70), v3 predates baselines."""
    monkeypatch.setenv("PREFIX_REGISTRY_BASELINE_GATE", "enforce")
    registry = PrefixRegistry(Settings())
    registry.ensure_task(TASK)
    for own, probe in (("0.8000", "0.7000"), ("0.6000", "0.7000"), ("0.6000", None)):
        with RecordedRun(registry, TASK, "registered-by-test", kind="train") as run:
            tags = {"metric.test_macro_f1": own}  # the name versions stored before evaluation sets were named
            if probe is not None:
                tags |= {f"metric.{BASELINE_PROBE_METRIC}": probe, f"metric.{BASELINE_MAJORITY_METRIC}": "0.6500"}
            registry.register_version(TASK, run.run_id, run.artifact_uri, tags, "a version made by the test")
    return registry


def test_a_version_below_its_baseline_cannot_become_champion_without_force(gated: PrefixRegistry) -> None:
    gated.promote(TASK, "1")
    with pytest.raises(BelowBaseline, match=r"version 2 test macro-F1 0\.600 <= linear probe 0\.700") as refused:
        gated.promote(TASK, "2", reason="looks fine to me")
    assert "\n" not in str(refused.value) and "--force" in str(refused.value)
    assert gated.aliases(TASK)["champion"] == "1"
    assert [event.to_version for event in gated.alias_history(TASK)] == ["1"]


def test_forcing_a_version_below_its_baseline_keeps_the_reason_in_the_history(gated: PrefixRegistry) -> None:
    gated.promote(TASK, "2", reason="probe cannot serve this traffic", force=True)
    assert gated.aliases(TASK)["champion"] == "2"
    last = gated.alias_history(TASK)[-1]
    assert last.reason.startswith(FORCED_PREFIX) and last.reason.endswith(": probe cannot serve this traffic")
    assert "0.600 <= linear probe 0.700" in last.reason
    with pytest.raises(ConfigError, match="--force needs --reason"):
        gated.promote(TASK, "1", force=True)


def test_only_the_champion_is_gated_and_versions_without_a_baseline_pass(gated: PrefixRegistry) -> None:
    gated.promote(TASK, "2", alias="challenger")
    gated.promote(TASK, "3")
    assert gated.aliases(TASK) == {"challenger": "2", "champion": "3"}
    assert [v.beats_baseline for v in gated.versions(TASK)] == [True, False, None]


def test_the_cli_refuses_with_one_line_and_exit_2_and_shows_the_baseline(gated: PrefixRegistry, cli) -> None:
    refused = cli("promote", TASK, "2")
    assert refused.exit_code == 2
    assert refused.stderr.strip().count("\n") == 0 and "expected a version that beats its baseline" in refused.stderr
    forced = cli("promote", TASK, "2", "--force", "--reason", "known label noise", "--json")
    assert forced.exit_code == 0 and forced.json()["reason"].endswith("known label noise")
    listed = {v["version"]: v["baseline"] for v in cli("versions", TASK, "--json").json()}
    assert listed["2"] == {"probe_test_macro_f1": 0.7, "majority_rate": 0.65, "beats_baseline": False}
    table = cli("versions", TASK).stdout
    assert "probe" in table and "NO" in table


def test_the_retraining_gate_keeps_a_challenger_below_its_baseline_out(gated: PrefixRegistry) -> None:
    below, beats = gated.version(TASK, "2"), gated.version(TASK, "1")
    promoted, reason = retrain_gate(below, True, "challenger wins by 0.050", gated.settings)
    assert promoted is False and reason.startswith("challenger beat the champion but not its own baseline")
    assert retrain_gate(beats, True, "challenger wins by 0.050", gated.settings) == (True, "challenger wins by 0.050")


def test_every_training_run_measures_its_baseline_on_the_same_split(home: Path) -> None:
    registry = PrefixRegistry(Settings())
    outcome = train_and_register(registry, "measured", tiny_data(), tiny_config(), progress=False)
    version = registry.version("measured", outcome.version)
    probe = version.metrics[BASELINE_PROBE_METRIC]
    # 160 balanced reviews: the test split is 8 + 8, so the majority class is half of it.
    assert version.metrics[BASELINE_MAJORITY_METRIC] == pytest.approx(0.5)
    assert outcome.metrics["baseline_probe_macro_f1"] == pytest.approx(probe, abs=1e-4)
    expected = "beats" if version.metrics["own_test_macro_f1"] > probe else "below"
    assert version.tags[TAG_BASELINE] == expected and version.beats_baseline is (expected == "beats")
    run = registry.run(outcome.run_id)
    # On the run, each figure is named by the set it was computed on (the version's own test split).
    assert run.data.metrics["baseline/measured-v1-test/macro_f1_minus_probe"] == pytest.approx(
        version.metrics["own_test_macro_f1"] - probe, abs=1e-3
    )
    assert run.data.metrics["baseline/measured-v1-test/probe_macro_f1"] == pytest.approx(probe, abs=1e-4)
    # The probe is chosen on the validation split, named as the training curves name it.
    curve_sets = {name.split("/")[1] for name in run.data.metrics if name.startswith("curve/")}
    (validation,) = [name for name in curve_sets if name.startswith("measured-validation-")]
    assert f"baseline/{validation}/probe_macro_f1" in run.data.metrics
    assert not [name for name in run.data.metrics if name.startswith("baseline_") or name.startswith("own_test")]
