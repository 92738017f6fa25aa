"""Specification of the serving benchmark (bench/serving.py), run end to end in a reduced quick configuration.

The run trains the five adapters, registers four task copies (8 tasks in all), starts `prefixctl serve` once per
configuration this build supports and loads it for a second per load. Nothing here asserts a time: figures must be
there, consistent with one another, and every request answered.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench.serving import QUICK, TARGET_LOAD, TASKS, BenchSettings, Verdict, app, server_configs
from bench.serving_http import serve_flags
from prefix_registry.errors import PrefixRegistryError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TASK_COUNTS = (1, 8)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """The whole benchmark with `--quick --skip-wait` over 1 and 8 tasks, 1 s per load: (JSON results, stdout)."""
    out = tmp_path_factory.mktemp("bench") / "serving.json"
    options = ["--quick", "--skip-wait", "--task-counts", "1,8", "--load-seconds", "1", "--out", str(out)]
    result = CliRunner().invoke(app, options)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text(encoding="utf-8")), result.stdout


def test_every_adapter_is_trained_and_registered(quick_run: tuple[dict, str]) -> None:
    results, _ = quick_run
    versions = [(v["task"], v["version"], v["method"]) for v in results["training"]["versions"]]
    assert versions == [
        ("sentiment", "1", "prefix"),
        ("sentiment", "2", "prefix"),
        ("review-length", "1", "prefix"),
        ("sentiment-prompt", "1", "prompt"),
        ("sentiment-ptuning", "1", "ptuning"),
    ]
    assert all(v["steps"] == QUICK.max_steps for v in results["training"]["versions"])


def test_task_copies_are_distinct_adapters_of_every_method(quick_run: tuple[dict, str]) -> None:
    copies = quick_run[0]["copies"]
    assert copies["count"] == 4
    assert copies["tasks"] == ["t005-prefix", "t006-prefix", "t007-prompt", "t008-ptuning"]
    assert [c["source"] for c in copies["versions"]] == [f"{task} v1" for task in TASKS]
    digests = [c["digest"] for c in copies["versions"]]
    assert len(set(digests)) == 4 and all(len(digest) == 64 for digest in digests)
    assert copies["seconds"] > 0 and copies["median_register_seconds"] > 0 and copies["median_promote_seconds"] > 0
    sets = quick_run[0]["http"]["task_sets"]
    assert sets == {"1": ["sentiment"], "8": [*TASKS, *copies["tasks"]]}


def test_swaps_and_cold_loads_are_timed_and_the_ratios_are_their_quotients(quick_run: tuple[dict, str]) -> None:
    swap = quick_run[0]["swap"]
    warm, cold = swap["warm"], swap["cold"]
    assert swap["versions"] == ["1", "2"]
    for key in ("total_seconds", "promote_seconds", "refresh_seconds", "attach_seconds"):
        assert len(warm[key]) == QUICK.swaps and all(seconds > 0 for seconds in warm[key])
    for total, promote, refresh, attach in zip(
        warm["total_seconds"], warm["promote_seconds"], warm["refresh_seconds"], warm["attach_seconds"], strict=True
    ):
        assert total == pytest.approx(promote + refresh) and attach < refresh
    assert len(cold["seconds"]) == QUICK.cold_loads and cold["median_seconds"] > 0
    ratios = swap["ratios"]
    assert ratios["cold_vs_warm_swap"] == pytest.approx(cold["median_seconds"] / warm["median_total_seconds"])
    assert ratios["cold_vs_attach"] == pytest.approx(cold["median_seconds"] / warm["median_attach_seconds"])


def test_four_tasks_share_one_base(quick_run: tuple[dict, str]) -> None:
    memory = quick_run[0]["memory"]
    assert memory["base_loads"] == 1 and memory["base_loads_at_end"] == 1
    assert memory["resident_bases"] == ["minilm"]
    assert set(memory["adapter_bytes"]) == set(TASKS) and all(b > 0 for b in memory["adapter_bytes"].values())
    assert set(memory["methods"].values()) == {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"}
    rss = memory["rss_bytes"]
    assert memory["growth_bytes"]["tasks_2_to_4"] == rss["all_tasks"] - rss["task_1"]


def test_the_raw_forward_reference_is_measured_before_and_after_the_servers(quick_run: tuple[dict, str]) -> None:
    reference = quick_run[0]["reference"]
    measurements = list(reference["measurements"].values())
    assert len(measurements) == 2
    for measured in measurements:
        assert measured["batch_size"] == 32 and measured["texts"] == 32 * QUICK.reference_batches
        assert measured["max_length"] == 128 and measured["padded_tokens_per_text"] >= measured["mean_tokens_per_text"]
        assert measured["fp32"]["texts_per_second"] > 0 and measured["bf16_autocast"]["texts_per_second"] > 0
    # Texts over the seconds of every batch of both measurements.
    texts = sum(m["texts"] for m in measurements)
    seconds = sum(m["texts"] / m["fp32"]["texts_per_second"] for m in measurements)
    assert reference["combined_texts_per_second"]["fp32"] == pytest.approx(texts / seconds)


def test_each_configuration_runs_where_the_build_accepts_its_flags(quick_run: tuple[dict, str]) -> None:
    http = quick_run[0]["http"]
    supported = serve_flags()
    assert set(http["serve_flags"]) == supported
    configs = http["configs"]
    assert list(configs) == ["today", "batched fp32", "int8", "bf16"]
    for config in server_configs(supported, QUICK.plan, TASK_COUNTS):
        entry = configs[config.name]
        assert entry["flags"] == list(config.flags)
        assert entry["supported"] is (config.requires <= supported)
        if not entry["supported"]:
            assert entry["note"].startswith("not supported by this build") and "loads" not in entry
            continue
        assert "failed" not in entry, entry.get("failed")
        assert list(entry["loads"]) == [load.name for load in config.loads]
        for run in entry["loads"].values():
            # Every request answered in full, none refused, and the figures are those of the answers.
            assert run["answered"] == run["requests"] > 0 and run["status_counts"] == {"200": run["requests"]}
            assert run["texts"] == run["answered"] * run["texts_per_request"] and run["errors"] == []
            assert run["texts_per_second"] == pytest.approx(run["texts"] / run["wall_seconds"])
            latency = run["latency_ms"]
            assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert configs["today"]["supported"] is True  # every build has today's server


def test_targets_divide_figures_of_the_same_run(quick_run: tuple[dict, str]) -> None:
    results, stdout = quick_run
    targets = {row["target"]: row for row in results["targets"]}
    assert len(targets) == 4 + len(TASK_COUNTS) - 2  # one spread target per task set beyond 1
    configs = results["http"]["configs"]
    reference = results["reference"]["combined_texts_per_second"]["fp32"]
    first = targets["8 clients x 1 text, 1 task, batched fp32: texts/s / raw fp32 forward (batch 32)"]
    assert first["denominator"] == pytest.approx(reference)
    for row in targets.values():
        if row["verdict"] in (Verdict.PASS, Verdict.FAIL):
            assert row["ratio"] == pytest.approx(row["numerator"] / row["denominator"])
        else:
            assert row["ratio"] is None
    if configs["batched fp32"]["supported"]:
        batched = configs["batched fp32"]["loads"][TARGET_LOAD.name]
        assert first["numerator"] == pytest.approx(batched["texts_per_second"])
        assert first["verdict"] == (Verdict.PASS if batched["texts_per_second"] / reference >= 0.8 else Verdict.FAIL)
    else:
        assert first["verdict"] == Verdict.NOT_SUPPORTED and "not supported by this build" in stdout
    today = configs["today"]["loads"][TARGET_LOAD.name]
    info = {row["target"]: row for row in results["information"]}
    row = info["today, 8 clients x 1 text, 1 task: texts/s / raw fp32"]
    assert row["ratio"] == pytest.approx(today["texts_per_second"] / reference)


def test_the_monitor_judges_both_window_sizes(quick_run: tuple[dict, str]) -> None:
    monitor = quick_run[0]["monitor"]
    small, large = QUICK.monitor_sizes
    assert monitor["sizes"] == [small, large]
    for size in (small, large):
        runs = monitor["runs"][str(size)]
        assert len(runs) == QUICK.monitor_repeats
        for run in runs:
            assert run["current_size"] == size and run["status"] in ("ok", "drift")  # judged, not skipped
            assert run["labelled"] == len(range(0, size, 5)) and "embedding" in run["signals"]


def test_results_record_the_machine_and_load_and_the_tables_are_printed(quick_run: tuple[dict, str]) -> None:
    results, stdout = quick_run
    assert {"cpu_count", "torch_threads", "torch_version"} <= set(results["machine"])
    assert len(results["load"]["before"]) == 3 and len(results["load"]["after"]) == 3
    assert results["load"]["wait"] is None  # --skip-wait
    assert results["settings"]["quick"] is True and results["settings"]["task_counts"] == list(TASK_COUNTS)
    for title in ("Issue 20 targets", "HTTP loads", "In process", "cold ÷ warm", "results: "):
        assert title in stdout


def test_settings_refuse_an_odd_number_of_swaps_and_task_counts_not_rising_from_one() -> None:
    # An odd count would leave task 1 on its second version, and the monitor would judge the wrong one.
    with pytest.raises(PrefixRegistryError, match="even number of swaps"):
        BenchSettings(swaps=3)
    with pytest.raises(PrefixRegistryError, match="task counts rising from 1"):
        BenchSettings(task_counts=(10, 100))
