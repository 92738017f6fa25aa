"""The fast part of the fault suite (tests/faults), in CI: kill -9 at chosen points loses nothing acknowledged."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import scenarios


@pytest.fixture(scope="module")
def trained_home(module_home: Path) -> Path:
    scenarios.train_tiny_task(module_home, "sentiment")
    return module_home


def test_kill9_of_the_server_under_load_loses_no_acknowledged_prediction(trained_home: Path) -> None:
    outcome = scenarios.kill9_server_under_load(trained_home, "sentiment", clients=4, seconds=5.0)
    assert outcome.problems == [] and outcome.lost == 0, outcome.row()
    assert outcome.state_after["log_rows"] >= outcome.state_after["acknowledged"]


def test_kill9_mid_promotion_is_completed_by_the_next_move(trained_home: Path) -> None:
    outcome = scenarios.kill9_mid_promotion(trained_home)
    assert outcome.problems == [], outcome.row()
    assert outcome.state_after["right_after_kill"] == {"alias": "1", "last_entry": "2"}
    assert outcome.state_after["after_next_promote"] == {"alias": "3", "history": ["1", "2", "3"]}


STALE_RUN = """
import os, signal, sys, time
from prefix_registry.registry.runs import RecordedRun
from prefix_registry.registry.store import PrefixRegistry

with RecordedRun(PrefixRegistry(), "stale", "train", kind="train") as run:
    print(run.run_id, flush=True)
    if sys.argv[1] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)
"""


def test_runs_left_running_by_a_dead_process_are_closed_as_killed_by_the_next_start(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from prefix_registry.registry.runs import RUN_STALE_TAG, RecordedRun, close_stale_runs
    from prefix_registry.registry.store import PrefixRegistry

    registry = PrefixRegistry()
    killed = subprocess.run([sys.executable, "-c", STALE_RUN, "die"], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    killed_id = killed.stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", STALE_RUN, "park"], stdout=subprocess.PIPE, text=True)
    try:
        assert alive.stdout is not None
        alive_id = alive.stdout.readline().strip()
        # A run of this very process whose end MLflow refused (it was away): also stale once the block is left.
        with monkeypatch.context() as patch:
            patch.setattr(registry.gateway, "end_run", lambda *a, **k: (_ for _ in ()).throw(OSError("down")))
            with pytest.raises(RuntimeError, match="broke"), RecordedRun(registry, "stale", "t", "train") as own:
                raise RuntimeError("training broke")
        with RecordedRun(registry, "stale", "open", kind="train") as still_open:
            assert registry.run(killed_id).info.status == "RUNNING"  # what kill -9 leaves behind
            closed = close_stale_runs(registry, "stale")
            assert registry.run(still_open.run_id).info.status == "RUNNING"
        assert sorted(closed) == sorted([killed_id, own.run_id])
        assert registry.run(alive_id).info.status == "RUNNING"  # its process lives: not ours to close
        for run_id, why in ((killed_id, "is gone (killed"), (own.run_id, "lost it before finishing")):
            run = registry.run(run_id)
            assert run.info.status == "KILLED" and why in run.data.tags[RUN_STALE_TAG], run.data.tags
        assert close_stale_runs(registry, "stale") == []
    finally:
        alive.kill()
        alive.wait(timeout=30)
    assert close_stale_runs(registry, "stale") == [alive_id]


@pytest.mark.slow
def test_one_key_flooding_flipped_labels_gets_no_poisoned_challenger_promoted(home: Path) -> None:
    """A real retrain on the capped labels: 600 flipped from one key, 120 true from three others."""
    outcome = scenarios.poisoned_feedback_retrain(home)
    assert outcome.problems == [], outcome.row()
    state = outcome.state_after
    assert state["trained_on"]["mallory"] <= 0.25 * sum(state["trained_on"].values())
    assert state["judged_on"].get("mallory", 0) <= 0.25 * sum(state["judged_on"].values())
    assert not (state["promoted"] and state["challenger_worse_on_clean"])
