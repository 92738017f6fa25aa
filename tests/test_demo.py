"""The README's main command, in its quick size: every part of the story must happen, for real, end to end."""

from __future__ import annotations

import json

import pytest

from tests.background_demo import BackgroundDemo

# The demo runs in the background from the end of collection (tests/background_demo.py: its own limit counts); this
# test runs last and waits for what it printed.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3900)]


def test_quick_demo_tells_the_whole_story(background_demo: BackgroundDemo) -> None:
    demo = background_demo.outcome()
    assert demo.returncode == 0, demo.stderr[-3000:]
    stdout = demo.stdout
    summary = json.loads(stdout)

    windows = {w["name"]: w for w in summary["windows"]}
    assert windows["RT-1"]["drift"]["status"] == "ok" and windows["RT-1"]["served_by"] == ["1"]
    assert summary["drift_detected_in_window"] == "IMDB-1"
    assert {"text_length", "embedding"} <= set(windows["IMDB-1"]["drift"]["drifted_signals"])
    # The drift events started retrain runs through the Prefect automation; the first waited for more labels.
    assert summary["retrains"][0]["skipped"] is True and "are needed to retrain" in summary["retrains"][0]["reason"]
    decided = [r for r in summary["retrains"] if not r["skipped"]]
    assert len(decided) == 1 and decided[0]["state"] == "COMPLETED" and decided[0]["challenger_version"] == "2"
    versions = {v["version"]: v for v in summary["versions"]}
    assert versions["2"]["trigger"] == "drift" and versions["2"]["parent"] == "1"
    assert "fresh_holdout_macro_f1" in versions["2"]["metrics"]
    # The headline self-healing: v2 wins on the same fresh held-out texts, is promoted, serves, and one step rolls it
    # back (the summary is read after the rollback, so v2 says so).
    assert decided[0]["promoted"] is True and versions["2"]["decision"] == "promoted, then rolled back"
    fresh = summary["fresh_holdout"]
    assert fresh["challenger_macro_f1"] > fresh["champion_macro_f1"]
    assert summary["champion_before"] == "1" and summary["champion_after"] == "2"
    assert windows["IMDB-after-1"]["served_by"] == ["2"]
    # Live accuracy is measured (one 250-text window after retraining is too noisy in the quick story to compare).
    assert summary["live_accuracy"]["after_retraining"] is not None
    assert summary["rollback"]["from"] == "2" and summary["rollback"]["to"] == "1"
    assert summary["rollback"]["then_answered_by"] == "1"
    alerts = summary["alerts_delivered"]
    assert alerts["signatures_valid"]
    assert {"promotion", "drift_detected", "retrain_decision", "rollback"} <= set(alerts["kinds"])
    # v1's promotion and v2's, each alerted once by the alias move itself.
    assert alerts["kinds"].count("promotion") == 2
    runs = summary["prefect_flow_runs"]
    # judge-rollout's schedule may have run too (it finds no rollout in this story and ends Completed).
    flows = {r["flow"] for r in runs} - {"judge-rollout"}
    assert flows == {"train-prefix", "monitor-prefix", "retrain-prefix", "rollback-prefix"}
    # Every run shows under the Prefect UI's default filters (built-in state names): a skipped retrain too.
    assert all(r["state"] == "COMPLETED" and r["state_name"] == "Completed" for r in runs), runs
    retrains = [r for r in runs if r["flow"] == "retrain-prefix"]
    assert len(retrains) == len(summary["retrains"]) and all(r["from_deployment"] for r in retrains)
    assert sum("skipped" in r["tags"] for r in retrains) == sum(bool(r["skipped"]) for r in summary["retrains"])
    # Each monitoring pass went through the monitor-prefix deployment, run by the stage's flow runner.
    monitors = [r for r in runs if r["flow"] == "monitor-prefix"]
    assert len(monitors) >= len(summary["windows"]) and all(r["from_deployment"] for r in monitors)
    (rollback,) = [r for r in runs if r["flow"] == "rollback-prefix"]
    assert rollback["name"] == "rollback movie-sentiment v2 → v1" and {"rollback", "from:v2", "to:v1"} <= set(
        rollback["tags"]
    )
    # While the runner serves them, the deployments are Ready with their schedules on.
    deployments = {d["name"]: d for d in summary["prefect_deployments"]}
    assert set(deployments) == {"train-prefix", "monitor-prefix", "retrain-prefix", "judge-rollout"}
    assert all(d["status"] == "READY" and not d["paused"] for d in deployments.values()), deployments
    assert deployments["monitor-prefix"]["schedules_active"] == [True]
    uis = summary["open_the_uis"]
    assert "mlflow ui" in uis["mlflow"]
    assert uis["training_runs"].endswith("/runs?workflowType=machine_learning")
    assert uis["monitoring_runs"].endswith("/runs?workflowType=machine_learning")
