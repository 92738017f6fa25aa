"""Specification of the serving benchmark (bench/serving.py), run end to end in its quick configuration."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench.serving import QUICK, TASKS, BenchSettings, app
from prefix_registry.errors import PrefixRegistryError


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """The whole benchmark with `--quick --skip-wait`: (JSON results, stdout)."""
    out = tmp_path_factory.mktemp("bench") / "serving.json"
    result = CliRunner().invoke(app, ["--quick", "--skip-wait", "--out", str(out)])
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


def test_swaps_and_cold_loads_are_timed_and_the_ratios_are_their_quotients(quick_run: tuple[dict, str]) -> None:
    swap = quick_run[0]["swap"]
    warm, cold = swap["warm"], swap["cold"]
    assert swap["versions"] == ["1", "2"]
    for key in ("total_seconds", "promote_seconds", "refresh_seconds", "attach_seconds"):
        assert len(warm[key]) == QUICK.swaps and all(seconds > 0 for seconds in warm[key])
    # promote + refresh make the swap; the attach is part of the refresh.
    for total, promote, refresh, attach in zip(
        warm["total_seconds"], warm["promote_seconds"], warm["refresh_seconds"], warm["attach_seconds"], strict=True
    ):
        assert total == pytest.approx(promote + refresh) and attach < refresh
    assert len(cold["seconds"]) == QUICK.cold_loads and cold["median_seconds"] > 0
    ratios = swap["ratios"]
    assert ratios["cold_vs_warm_swap"] == pytest.approx(cold["median_seconds"] / warm["median_total_seconds"])
    assert ratios["cold_vs_refresh"] == pytest.approx(cold["median_seconds"] / warm["median_refresh_seconds"])
    assert ratios["cold_vs_attach"] == pytest.approx(cold["median_seconds"] / warm["median_attach_seconds"])


def test_four_tasks_share_one_base(quick_run: tuple[dict, str]) -> None:
    results, _ = quick_run
    memory = results["memory"]
    assert memory["base_loads"] == 1 and memory["base_loads_at_end"] == 1
    assert memory["resident_bases"] == ["minilm"]
    assert set(memory["adapter_bytes"]) == set(TASKS) and all(b > 0 for b in memory["adapter_bytes"].values())
    assert set(memory["methods"].values()) == {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"}
    assert memory["base_weight_bytes"] > 50 * sum(memory["adapter_bytes"].values())
    rss = memory["rss_bytes"]
    assert all(value > 0 for value in rss.values())
    assert memory["growth_bytes"]["tasks_2_to_4"] == rss["all_tasks"] - rss["task_1"]
    server = results["http"]["server_tasks"]
    assert server["base_loads"] == 1 and server["resident_base_models"] == ["minilm"]
    assert set(server["serving"]) == set(TASKS)


def test_every_http_request_is_answered_and_throughput_ratios_divide_the_runs(quick_run: tuple[dict, str]) -> None:
    http = quick_run[0]["http"]
    scenarios = http["scenarios"]
    assert set(scenarios) == {"8-text, 1 task", "8-text, 4 tasks", "1-text, 1 task", "1-text, 4 tasks"}
    for name, scenario in scenarios.items():
        per_request = QUICK.requests if name.startswith("8-") else QUICK.single_requests
        assert scenario["requests"] == per_request * QUICK.rounds
        assert scenario["answered"] == scenario["requests"] and scenario["errors"] == []
        assert scenario["texts"] == scenario["requests"] * scenario["texts_per_request"]
        assert scenario["texts_per_second"] > 0 and scenario["requests_per_second"] > 0
        latency = scenario["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        assert set(scenario["latency_p50_ms_by_task"]) == set(scenario["tasks"])
    assert scenarios["8-text, 4 tasks"]["tasks"] == list(TASKS)
    for n in (8, 1):
        four, one = scenarios[f"{n}-text, 4 tasks"], scenarios[f"{n}-text, 1 task"]
        assert http["ratios"][f"{n}_text_throughput_4_vs_1_tasks"] == pytest.approx(
            four["texts_per_second"] / one["texts_per_second"]
        )
        assert http["ratios"][f"{n}_text_p50_latency_4_vs_1_tasks"] == pytest.approx(
            four["latency_ms"]["p50"] / one["latency_ms"]["p50"]
        )
        service = http["service_times"][f"{n}_text_median_ms"]
        assert set(service) == set(TASKS) and all(ms > 0 for ms in service.values())
        assert http["service_times"][f"expected_{n}_text_throughput_4_vs_1_tasks"] == pytest.approx(
            service[TASKS[0]] / (sum(service.values()) / len(service))
        )
    # The server logged what it answered (the warm-up included).
    assert http["predictions_logged_for_task_1"] >= scenarios["8-text, 1 task"]["texts"]


def test_the_monitor_judges_both_window_sizes(quick_run: tuple[dict, str]) -> None:
    monitor = quick_run[0]["monitor"]
    small, large = QUICK.monitor_sizes
    assert monitor["sizes"] == [small, large]
    assert monitor["fill"]["distinct_texts"] == large and monitor["fill"]["predict_texts_per_second"] > 0
    assert monitor["first_call"]["seconds"] > 0 and monitor["first_call"]["size"] == small
    for size in (small, large):
        runs = monitor["runs"][str(size)]
        assert len(runs) == QUICK.monitor_repeats
        for run in runs:
            assert run["seconds"] > run["detect_seconds"] > 0
            assert run["current_size"] == size and run["status"] in ("ok", "drift")  # judged, not skipped
            assert run["labelled"] == len(range(0, size, 5)) and "embedding" in run["signals"]
    warm = monitor["warm_median_seconds"]
    assert monitor["ratios"]["largest_vs_smallest"] == pytest.approx(warm[str(large)] / warm[str(small)])
    assert monitor["ratios"]["first_call_vs_warm_smallest"] == pytest.approx(
        monitor["first_call"]["seconds"] / warm[str(small)]
    )


def test_results_record_the_machine_and_load_and_the_table_is_printed(quick_run: tuple[dict, str]) -> None:
    results, stdout = quick_run
    assert {"cpu_count", "torch_threads", "torch_version"} <= set(results["machine"])
    assert len(results["load"]["before"]) == 3 and len(results["load"]["after"]) == 3
    assert results["load"]["wait"] is None  # --skip-wait
    assert results["settings"]["quick"] is True
    assert "one resident base" in stdout and "cold ÷ warm" in stdout and "results: " in stdout


def test_settings_refuse_an_odd_number_of_swaps() -> None:
    # An odd count would leave task 1 on its second version, and the monitor would judge the wrong one.
    with pytest.raises(PrefixRegistryError, match="even number of swaps"):
        BenchSettings(swaps=3)
