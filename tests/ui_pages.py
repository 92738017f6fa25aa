"""Reading pages in headless Chromium for the browser tests: open, wait, screenshot, and the few UI moves they need.

Screenshots go to results/ui/ (gitignored). The MLflow UI polls, so the network never goes idle: a page counts as
rendered once a text it must show is there, plus a short wait for the last fetches.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results" / "ui"
PAGE_TIMEOUT_MS = 90_000
VIEWPORT = {"width": 1440, "height": 1000}


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def opened(browser: Any, url: str, waits_for: str, height: int = VIEWPORT["height"]) -> Iterator[Any]:
    """A new page at `url` (a window `height` pixels tall), once `waits_for` is rendered; closed on exit."""
    page = browser.new_page(viewport={**VIEWPORT, "height": height})
    try:
        page.goto(url, timeout=PAGE_TIMEOUT_MS)
        page.get_by_text(waits_for).first.wait_for(timeout=PAGE_TIMEOUT_MS)
        page.wait_for_timeout(1500)  # the last fetches render
        yield page
    finally:
        page.close()


def save_screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    """Save what the page shows as results/ui/`name` (the whole page, or only the viewport)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


def read_page(browser: Any, url: str, waits_for: str, screenshot: str) -> str:
    """Open MLflow UI page `url`, wait until `waits_for` is rendered, close the assistant panel, save a full-page
    screenshot; returns the page's visible text."""
    with opened(browser, url, waits_for) as page:
        close_mlflow_assistant(page)
        save_screenshot(page, screenshot)
        return page.inner_text("body")


def close_mlflow_assistant(page: Any) -> None:
    """Close the MLflow Assistant side panel (MLflow 3.x opens it beside every page) if it is open."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()
        page.wait_for_timeout(300)


def scroll_metrics_to(page: Any, metric: str, row_index: int) -> list[float]:
    """Scroll the compare page's "Metrics" table to `metric` (row `row_index` of its sorted names); its values.

    The table is two virtualised grids, names and values, that headless Chromium does not scroll together
    (MLflow 3.17), so each is scrolled to the same offset. Returns the numbers in the metric's row, one per run.
    """
    names, values = page.get_by_role("grid").nth(0), page.get_by_role("grid").nth(1)
    names.scroll_into_view_if_needed()
    row_height = names.evaluate("grid => grid.querySelector('[style*=\"top\"]').getBoundingClientRect().height")
    offset = max(0, (row_index - 2) * row_height)  # two rows of context above it
    name_cell = names.get_by_text(metric, exact=True)
    for _ in range(20):  # a busy machine renders late; a grid's own scroll handler may reset the other's offset
        for grid in (values, names):
            grid.evaluate("(grid, y) => { grid.scrollTop = y; }", offset)
            page.wait_for_timeout(250)
        if name_cell.count() and values.evaluate("grid => grid.scrollTop") == names.evaluate("grid => grid.scrollTop"):
            break
    name_cell.wait_for(timeout=5_000)
    top = name_cell.evaluate("cell => cell.closest('[style*=\"top\"]').style.top")
    cells = values.locator(f"xpath=.//div[contains(@style, 'top: {top};')]")
    text = " ".join(cells.nth(i).inner_text() for i in range(cells.count()))
    return [float(number) for number in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]
