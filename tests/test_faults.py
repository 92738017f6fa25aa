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
