"""The MLflow and Prefect UIs tell the story, as a person sees it in a real browser (Debian's Chromium, headless).

Over a store holding v1 (champion), the monitoring run that found drift, and v2 (retrained by the Prefect flow,
promoted, rolled back), built once by tests/ui_story.py, a real `mlflow server` and the Prefect server the flow ran
against serve their UIs; Chromium reads the rendered pages. Screenshots are kept in results/ui/:

    model.png               the registered model page: the champion and the alias-history table in its description
    version-2.png           v2's page: why it exists (trigger, monitoring run, parent), the decision, the rollback
    compare.png             MLflow's comparison of v1's and v2's runs: the same-named metrics on the parallel plot
    compare-metrics.png     the same page at its "Metrics" table: both runs' values side by side
    monitoring-run.png      the monitoring run: its one-line verdict, the thresholds it was judged with
    monitoring-report.png   its Evidently report, opened from the artifact store: embedding AUC, accuracy, macro-F1
    prefect-retrain-run.png the retrain's Prefect flow run, named by task, versions and trigger
    experiment-training.png / experiment-monitoring.png   the task's two experiments, opened by the project's links:
                            on their runs (not MLflow's GenAI traces page), the model registry in the sidebar
    prefect-retrain-deployment.png   the retrain deployment's Runs tab: all three retrain runs, skipped ones too
    prefect-rollback-run.png         the rollback's flow run: task, from, to, who, with its artifact
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

import pytest

from prefix_registry.flows.deployments import PrefectUnavailable
from prefix_registry.flows.run_labels import retrain_name
from prefix_registry.monitoring.drift_runs import monitoring_runs
from prefix_registry.monitoring.monitor import MonitorOutcome
from prefix_registry.monitoring.verdict_text import verdict_line
from prefix_registry.registry import ui_links
from prefix_registry.registry.comparison import compare_versions
from prefix_registry.registry.gateway import EXPERIMENT_KIND_TAG, MACHINE_LEARNING_KIND, ExperimentPurpose
from tests.servers.integration import missing_server
from tests.servers.mlflow_server import MlflowServer
from tests.servers.prefect_server import running_prefect
from tests.ui_pages import (
    PAGE_TIMEOUT_MS,
    close_mlflow_assistant,
    find_chromium,
    opened,
    read_page,
    save_screenshot,
    scroll_metrics_to,
)
from tests.ui_story import ROLLBACK_REASON, TASK, Story, build_drift_story

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Logged by both v1's and v2's runs on the same named sets (v1's test split, v2's fresh hold-out; the champion's score
# on the latter on its own run): the values a reader compares, one row per set.
SHARED_METRICS = (
    f"eval/{TASK}-v1-test/accuracy",
    f"eval/{TASK}-v1-test/macro_f1",
    f"eval/{TASK}-v2-fresh-holdout/macro_f1",
)


@pytest.fixture(scope="module")
def prefect_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Prefect server the story's retrain flow reports to; yields its UI's address."""
    try:
        with running_prefect(tmp_path_factory.mktemp("prefect")) as api_url:
            yield api_url.removesuffix("/api")
    except PrefectUnavailable as error:
        missing_server(error, "pip install the prefect server extras")


@pytest.fixture(scope="module")
def story(module_home: Path, prefect_ui: str) -> Iterator[Story]:
    yield build_drift_story()


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


def monitoring(story: Story) -> MonitorOutcome:
    assert story.monitoring is not None and story.monitoring.run_id, "the story has no monitoring run"
    return story.monitoring


def monitoring_run_path(story: Story) -> str:
    run_id = monitoring(story).run_id
    return f"#/experiments/{story.registry.experiment_id(TASK, ExperimentPurpose.MONITORING)}/runs/{run_id}"


@pytest.mark.parametrize("purpose", list(ExperimentPurpose))
def test_the_experiment_links_open_on_its_runs(story: Story, ui: str, browser: Any, purpose: ExperimentPurpose) -> None:
    registry = story.registry
    experiment_id = registry.experiment_id(TASK, purpose)
    experiment = registry.gateway.experiment(experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MACHINE_LEARNING_KIND
    if purpose is ExperimentPurpose.TRAINING:
        expected = [registry.run(registry.version(TASK, v).run_id).info.run_name for v in ("1", "2")]
    else:
        expected = [run.info.run_name for run in monitoring_runs(registry, TASK)]
        assert expected == [registry.run(str(monitoring(story).run_id)).info.run_name]
        assert expected[0].startswith(f"{TASK} v1 drift check ") and expected[0].endswith(" UTC: drift (#0)")
    with opened(browser, ui_links.experiment_url(ui, experiment_id), expected[0]) as page:
        close_mlflow_assistant(page)
        save_screenshot(page, f"experiment-{purpose}.png", full_page=False)
        landed, text = page.url, page.inner_text("body")
    # Not MLflow's GenAI traces page: the runs table, with the model registry in the sidebar.
    assert f"/experiments/{experiment_id}/runs" in landed and "workflowType=machine_learning" in landed
    assert all(name in text for name in expected), text[:2000]
    assert "Model registry" in text


def test_the_version_page_shows_parent_trigger_and_decision(story: Story, ui: str, browser: Any) -> None:
    text = read_page(browser, f"{ui}/#/models/{TASK}/versions/2", "Why this version exists", "version-2.png")
    assert "Why this version exists: trigger drift: drift in" in text
    assert "v1 (warm start)" in text  # the parent
    assert "Decision: PROMOTED to champion" in text
    assert "Compared with v1 (champion at the time) on the same evaluation sets" in text
    assert f"{TASK}-v2-fresh-holdout" in text and f"{TASK}-v1-test" in text
    assert "This version was rolled back from champion" in text
    assert "promoted, then rolled back" in text  # the retrain_decision tag


def test_the_version_page_links_to_the_monitoring_run_that_caused_it(story: Story, ui: str, browser: Any) -> None:
    with opened(browser, f"{ui}/#/models/{TASK}/versions/2", "Why this version exists") as page:
        link = page.locator(f'a[href$="{monitoring_run_path(story)}"]')
        assert link.count() == 1, f"no link to {monitoring_run_path(story)} on v2's page"
        assert link.inner_text() == "monitoring run"
        with page.context.expect_page() as opening:  # MLflow opens a description's links in a new tab
            link.click()
        landed = opening.value
        landed.get_by_text(verdict_line(monitoring(story).verdict)).first.wait_for(timeout=PAGE_TIMEOUT_MS)
        assert landed.url.endswith(monitoring_run_path(story))


def test_the_model_page_shows_the_champion_and_its_history(story: Story, ui: str, browser: Any) -> None:
    text = read_page(browser, f"{ui}/#/models/{TASK}", "Alias history", "model.png")
    assert "Champion now: v1." in text
    assert "v2 misreads sarcastic reviews in production" in text
    assert "rollback" in text and "promote" in text


def _json_looking(value: str) -> bool:
    return value.lstrip().startswith(("{", "["))


def test_no_tag_on_the_model_or_version_pages_holds_json(story: Story, ui: str, browser: Any) -> None:
    """The tags these pages list (read from the store the UI reads) and the pages' own text: no raw JSON value."""
    from mlflow import MlflowClient

    settings = story.registry.settings
    client = MlflowClient(tracking_uri=settings.resolved_tracking_uri, registry_uri=settings.resolved_registry_uri)
    model_tags = client.get_registered_model(TASK).tags
    assert model_tags and not [key for key, value in model_tags.items() if _json_looking(value)], model_tags
    assert not [key for key in model_tags if key.startswith("prefix_registry.alias_history")]
    for version in ("1", "2"):
        tags = client.get_model_version(TASK, version).tags
        assert tags and not [key for key, value in tags.items() if _json_looking(value)], (version, tags)
    pages = [(f"{ui}/#/models/{TASK}", "Alias history")]
    pages += [(f"{ui}/#/models/{TASK}/versions/{v}", "Why this version exists") for v in ("1", "2")]
    for url, waits_for in pages:
        with opened(browser, url, waits_for) as page:
            close_mlflow_assistant(page)
            text = page.inner_text("body")
        lines = [line.strip() for line in text.splitlines()]
        assert not [line for line in lines if line.startswith(('{"', '["'))], url
        if "/versions/" in url:
            # The short tag set is listed; what the product reads back (hashes, integrity, score copies) is not.
            assert "data_window" in text and "baseline" in text, url
            assert not [name for name in ("adapter_digest", "fingerprint", "eval_set", "metric.") if name in text], url


def test_the_run_comparison_lines_up_the_same_named_metrics(story: Story, ui: str, browser: Any) -> None:
    registry = story.registry
    versions = [registry.version(TASK, v) for v in ("1", "2")]
    runs = [version.run_id for version in versions]
    url = f"{ui}/#/compare-runs?runs={json.dumps(runs)}&experiments={json.dumps([registry.experiment_id(TASK)])}"
    with opened(browser, url, "Comparing 2 Runs") as page:
        close_mlflow_assistant(page)
        # The parallel-coordinates plot draws the shared metrics too (its default is one metric).
        metrics_picker = page.get_by_text("Metrics:", exact=True).locator("xpath=following::input[1]")
        for metric in SHARED_METRICS:
            metrics_picker.click()
            metrics_picker.fill(metric)
            page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.wait_for_timeout(800)
        save_screenshot(page, "compare.png")
        text = page.inner_text("body")
        assert runs[0] in text and runs[1] in text
        assert "parent_version" in text and "warm_start" in text
        for metric in SHARED_METRICS:  # axis titles of the plot
            assert page.locator(f"svg text:text-is('{metric}')").count(), f"{metric} is not on the plot"

        logged = [registry.run(run_id).data.metrics for run_id in runs]
        names = sorted(set(logged[0]) | set(logged[1]))  # the table's rows, in its order
        # What `prefixctl compare TASK 1 2 --json` prints for each shared set, by its metric name on both runs.
        printed = {
            f"eval/{row['dataset_a']}/{row['metric']}": (row["a"], row["b"])
            for row in compare_versions(registry, TASK, "1", "2").summary()["scores"]
            if row["same_set"]
        }
        for metric in SHARED_METRICS:
            shown = scroll_metrics_to(page, metric, names.index(metric))
            expected = [metrics[metric] for metrics in logged]
            assert None not in printed[metric], f"{metric}: compare --json lacks a version's score"
            assert expected == pytest.approx(list(printed[metric]), abs=1e-12), f"{metric}: compare --json differs"
            assert shown == pytest.approx(expected, abs=1e-3), f"{metric}: the table shows {shown}"
        # The page's own scroll container: runs' differing params above, the metrics table at the bottom.
        page.get_by_role("switch", name="Parameters - Show diff only").click()
        page.get_by_role("grid").nth(1).evaluate("grid => grid.scrollIntoView({block: 'end'})")
        page.wait_for_timeout(500)
        save_screenshot(page, "compare-metrics.png", full_page=False)


def test_the_monitoring_run_shows_its_verdict_and_thresholds(story: Story, ui: str, browser: Any) -> None:
    verdict = monitoring(story).verdict
    line = verdict_line(verdict)
    assert line.startswith("DRIFT in ") and "embedding" in line
    # The page scrolls inside its own container: a window tall enough for the verdict and the thresholds.
    with opened(browser, f"{ui}/{monitoring_run_path(story)}", line, height=1300) as page:
        close_mlflow_assistant(page)
        page.get_by_placeholder("Search parameters").fill("threshold.")
        thresholds = {
            name: page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))
            for name in ("threshold.embedding", "threshold.accuracy_drop")
        }
        thresholds["threshold.embedding"].wait_for(timeout=10_000)
        shown = {name: row.inner_text().split() for name, row in thresholds.items()}
        page.wait_for_timeout(300)
        save_screenshot(page, "monitoring-run.png", full_page=False)
        text = page.inner_text("body")
    assert line in text
    assert shown == {
        "threshold.embedding": ["threshold.embedding", "0.7"],
        "threshold.accuracy_drop": ["threshold.accuracy_drop", "0.1"],
    }


def test_the_monitoring_report_names_the_embedding_signal_and_live_quality(story: Story, browser: Any) -> None:
    run = story.registry.run(str(monitoring(story).run_id))
    store = urlparse(run.info.artifact_uri)
    assert store.scheme in ("", "file"), f"expected a file artifact store, got {run.info.artifact_uri}"
    report = Path(store.path) / "drift" / "drift_report.html"
    assert report.is_file(), f"no Evidently report at {report}"
    with opened(browser, report.as_uri(), "Embedding drift") as page:
        save_screenshot(page, "monitoring-report.png")
        text = page.inner_text("body")
    embedding = monitoring(story).verdict.signals["embedding"]
    assert "Embedding drift (domain classifier ROC AUC)" in text and f"{embedding.score:.3f}" in text
    assert "Live accuracy" in text and "Live macro-F1" in text


def test_the_retrain_deployment_lists_every_retrain_run_skipped_ones_too(
    story: Story, prefect_ui: str, browser: Any
) -> None:
    assert story.retrain_runs == (
        f"retrain {TASK} v1 (drift): skipped",
        f"retrain {TASK} v1 → v2 (drift)",
        f"retrain {TASK} v2 (manual): skipped",
    )
    url = f"{prefect_ui}/deployments/deployment/{story.retrain_deployment_id}?tab=Runs"
    with opened(browser, url, story.retrain_runs[-1]) as page:
        save_screenshot(page, "prefect-retrain-deployment.png")
        text = page.inner_text("body")
    # The Runs tab under its default filter: all three, the skipped ones as Completed.
    assert all(name in text for name in story.retrain_runs), text[:3000]


def test_the_rollback_is_a_prefect_flow_run_with_its_artifact(story: Story, prefect_ui: str, browser: Any) -> None:
    name = f"rollback {TASK} v2 → v1"
    with opened(browser, f"{prefect_ui}/runs/flow-run/{story.rollback_flow_run_id}", name) as page:
        save_screenshot(page, "prefect-rollback-run.png")
        text = page.inner_text("body")
    assert "Completed" in text and "rollback" in text and "from:v2" in text and "to:v1" in text
    (artifact,) = flow_run_markdown(str(story.rollback_flow_run_id))
    assert artifact.key == f"rollback-{TASK}"
    assert f"| {TASK} | champion | v2 | v1 |" in artifact.data and ROLLBACK_REASON in artifact.data


def flow_run_markdown(flow_run_id: str) -> list[Any]:
    """The markdown artifacts of one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
    return [artifact for artifact in found if artifact.type == "markdown"]


def test_the_prefect_retrain_run_is_named_by_task_versions_and_trigger(
    story: Story, prefect_ui: str, browser: Any
) -> None:
    name = retrain_name(TASK, "1", "drift", "2")
    assert name == f"retrain {TASK} v1 → v2 (drift)"
    with opened(browser, f"{prefect_ui}/runs/flow-run/{story.retrain_flow_run_id}", name) as page:
        save_screenshot(page, "prefect-retrain-run.png")
        text = page.inner_text("body")
    assert name in text and "Completed" in text
    assert "decision:promoted" in text and "trigger:drift" in text
