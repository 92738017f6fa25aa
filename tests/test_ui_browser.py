"""The MLflow UI tells the story, as a person sees it in a real browser (Debian's Chromium, headless).

Over a store holding v1 (champion) and v2 (retrained, promoted, rolled back), built by tests/ui_story.py, a real
`mlflow server` serves the UI; Chromium reads the rendered pages. Screenshots are kept in results/ui/:

    model.png       the registered model page: the champion and the alias-history table in its description
    version-2.png   v2's page: why it exists (parent, trigger), the decision, and that it was rolled back
    compare.png     MLflow's run comparison of v1's and v2's runs: params (parent, warm start) and metrics
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.integration import missing_server
from tests.servers.mlflow_server import MlflowServer
from tests.ui_story import TASK, Story, build_story

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RESULTS = Path(__file__).resolve().parents[1] / "results" / "ui"
PAGE_TIMEOUT_MS = 90_000


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def story(module_home: Path) -> Iterator[Story]:
    yield build_story()


@pytest.fixture(scope="module")
def ui(story: Story, module_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The MLflow UI over the story's own store (its runs' artifacts stay where the story wrote them)."""
    with MlflowServer(
        tmp_path_factory.mktemp("mlflow-ui"), backend_store_uri=f"sqlite:///{module_home / 'mlflow.db'}"
    ) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = find_chromium()
    if chromium is None:
        missing_server(RuntimeError("Chromium is not installed"), "run `make chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        missing_server(error, "pip install playwright")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        launched.close()


def read_page(browser: Any, url: str, waits_for: str, screenshot: str) -> str:
    """Open `url`, wait until `waits_for` is rendered, save a full-page screenshot, return the page's visible text."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(url, timeout=PAGE_TIMEOUT_MS)
        page.get_by_text(waits_for).first.wait_for(timeout=PAGE_TIMEOUT_MS)
        page.wait_for_timeout(1500)  # the UI polls, so the network never goes idle: let the last fetches render
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / screenshot
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return page.inner_text("body")
    finally:
        page.close()


def test_the_version_page_shows_parent_trigger_and_decision(story: Story, ui: str, browser: Any) -> None:
    text = read_page(browser, f"{ui}/#/models/{TASK}/versions/2", "Why this version exists", "version-2.png")
    assert "Why this version exists: trigger manual" in text
    assert "v1 (warm start)" in text  # the parent
    assert "Decision: PROMOTED to champion" in text
    assert "Compared with v1 (champion at the time) on the same evaluation sets" in text
    assert f"{TASK}-v2-fresh-holdout" in text and f"{TASK}-v1-test" in text
    assert "This version was rolled back from champion" in text
    assert "promoted, then rolled back" in text  # the retrain_decision tag


def test_the_model_page_shows_the_champion_and_its_history(story: Story, ui: str, browser: Any) -> None:
    text = read_page(browser, f"{ui}/#/models/{TASK}", "Alias history", "model.png")
    assert "Champion now: v1." in text
    assert "v2 misreads sarcastic reviews in production" in text
    assert "rollback" in text and "promote" in text


def test_the_run_comparison_lines_up_the_same_named_metrics(story: Story, ui: str, browser: Any) -> None:
    registry = story.registry
    runs = [registry.version(TASK, v).run_id for v in ("1", "2")]
    experiment = registry.experiment_id(TASK)
    url = f"{ui}/#/compare-runs?runs={json.dumps(runs)}&experiments={json.dumps([experiment])}"
    text = read_page(browser, url, "Comparing 2 Runs", "compare.png")
    assert runs[0] in text and runs[1] in text
    # The metrics table is virtualised (only its first rows are in the page): the champion's decision-time scores
    # on v2's sets sort among them, next to the challenger's run.
    assert "champion_fresh_holdout_macro_f1" in text
    assert "parent_version" in text and "warm_start" in text
