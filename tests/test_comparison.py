"""Versions compare by construction: the same named evaluation sets, metric names that always mean one set, a
`prefixctl compare` for people and scripts, and a registry that tells the champion's history where people look."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefix_registry.registry.eval_sets import EVAL_SET_TAG_PREFIX
from prefix_registry.registry.model_history import HISTORY_HEADING
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.versions import TAG_ADAPTER_SHA256, TAG_LABELS, VISIBLE_TAGS
from prefix_registry.settings import Settings
from tests.ui_story import ROLLBACK_REASON, TASK, Story, build_story

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def story(module_home: Path) -> Iterator[Story]:
    yield build_story()


def test_compare_json_scores_both_versions_on_the_same_named_sets(story: Story, cli) -> None:
    result = cli("compare", TASK, "1", "v2", "--json")
    assert result.exit_code == 0, result.stderr
    out = result.json()
    rows = {(row["set"], row["metric"]): row for row in out["scores"]}
    reference, fresh = rows[("reference_test", "macro_f1")], rows[("fresh_holdout", "macro_f1")]
    assert reference["same_set"] and reference["dataset_a"] == f"{TASK}-v1-test"
    assert fresh["same_set"] and fresh["dataset_a"] == f"{TASK}-v2-fresh-holdout"
    scores = story.decision
    assert fresh["a"] == pytest.approx(scores["champion_scores"]["fresh_holdout"]["macro_f1"], abs=1e-4)
    assert fresh["b"] == pytest.approx(scores["challenger_scores"]["fresh_holdout"]["macro_f1"], abs=1e-4)
    assert fresh["change"] == pytest.approx(fresh["b"] - fresh["a"])
    # Each version's own split is its own set: shown, never subtracted.
    own = rows[("own_test", "macro_f1")]
    assert not own["same_set"] and own["change"] is None
    assert out["lineage"]["2"]["parent"] == "1" and out["lineage"]["2"]["trigger"] == "manual"
    assert out["decision"]["decision"] == "promoted, then rolled back" and out["decision"]["champion"] == "1"


def test_compare_takes_aliases_prints_a_table_and_names_what_exists(story: Story, cli) -> None:
    table = cli("compare", TASK, "champion", "2")
    assert table.exit_code == 0, table.stderr
    assert "reference_test" in table.stdout and "sentiment-v2-fresh-holdout" in table.stdout
    assert "decision: v2 against champion v1: promoted, then rolled back" in table.stdout
    unknown = cli("compare", TASK, "1", "7")
    assert unknown.exit_code == 2 and "has no version 7 (versions: 1, 2)" in unknown.stderr
    alias = cli("compare", TASK, "1", "staging")
    assert alias.exit_code == 2
    assert (
        "no version or alias 'staging': expected a version number (1, 2) or an alias (challenger=v2, champion=v1)"
        in alias.stderr
    )


def _client(registry: PrefixRegistry) -> Any:
    from mlflow import MlflowClient

    settings = registry.settings
    return MlflowClient(tracking_uri=settings.resolved_tracking_uri, registry_uri=settings.resolved_registry_uri)


def _dataset_digests(run: Any) -> dict[str, str]:
    """{dataset name: digest} of a run's dataset inputs."""
    return {item.dataset.name: item.dataset.digest for item in run.inputs.dataset_inputs}


def _set_of(metric: str) -> str | None:
    """The dataset a metric name says it was computed on (`eval/<set>/...`, `baseline/<set>/...`, `curve/<set>/...`)."""
    parts = metric.split("/")
    return parts[1] if len(parts) == 3 else None


def test_compare_json_prints_exactly_each_versions_run_metrics_on_each_set(story: Story, cli) -> None:
    client = _client(story.registry)
    v1, v2 = (client.get_model_version(TASK, v) for v in ("1", "2"))
    metrics = {"1": client.get_run(v1.run_id).data.metrics, "2": client.get_run(v2.run_id).data.metrics}
    out = cli("compare", TASK, "1", "2", "--json").json()
    rows = {(row["set"], row["metric"]): row for row in out["scores"]}
    assert {role for role, _ in rows} == {"reference_test", "fresh_holdout", "own_test"}
    for row in out["scores"]:
        for side, version in (("a", "1"), ("b", "2")):
            name = f"eval/{row[f'dataset_{side}']}/{row['metric']}"
            assert row[side] == metrics[version][name], (row, name)
    # One row per shared set with both versions' values, from their own runs, under one name.
    for role, dataset in (("reference_test", f"{TASK}-v1-test"), ("fresh_holdout", f"{TASK}-v2-fresh-holdout")):
        row = rows[(role, "macro_f1")]
        assert row["same_set"] and row["dataset_a"] == row["dataset_b"] == dataset
        assert row["a"] is not None and row["b"] is not None
    # The champion's score on the challenger's fresh hold-out is the one that judged it.
    fresh = rows[("fresh_holdout", "macro_f1")]
    assert fresh["a"] == pytest.approx(story.decision["champion_scores"]["fresh_holdout"]["macro_f1"], abs=1e-9)
    assert fresh["b"] == pytest.approx(story.decision["challenger_scores"]["fresh_holdout"]["macro_f1"], abs=1e-9)


def test_no_metric_name_means_two_evaluation_sets_and_none_is_logged_twice(story: Story) -> None:
    client = _client(story.registry)
    runs = [client.get_run(client.get_model_version(TASK, v).run_id) for v in ("1", "2")]
    digests = [_dataset_digests(run) for run in runs]
    # Every set-named metric names a dataset input of its own run...
    for run, inputs in zip(runs, digests, strict=True):
        for name in run.data.metrics:
            if name.startswith("eval/"):
                assert _set_of(name) in inputs, (name, sorted(inputs))
    # ...and a name on both runs is a set with one digest.
    shared = set(digests[0]) & set(digests[1])
    assert shared == {f"{TASK}-v1-test", f"{TASK}-v2-fresh-holdout"}
    assert all(digests[0][name] == digests[1][name] for name in shared)
    common = set(runs[0].data.metrics) & set(runs[1].data.metrics)
    assert {_set_of(name) for name in common} - {None} <= shared
    # No set twice under two names: one dataset name per digest in each run, and no old role-named metric.
    for inputs in digests:
        assert len(set(inputs.values())) == len(inputs), inputs
    for run in runs:
        names = set(run.data.metrics)
        assert not [n for n in names if n.startswith(("own_test", "reference_test", "fresh_holdout", "champion_"))]
        assert not [n for n in names if n.startswith(("test_", "best_validation", "validation_", "baseline_"))]
        assert "optimizer_steps_run" not in names and "optimizer_steps" in names
        # Scores name the evaluation sets; the training splits (curves, the probe's choice) carry their digest.
        for name in names:
            dataset = _set_of(name)
            if dataset is not None and name.startswith("eval/"):
                assert dataset in {f"{TASK}-v1-test", f"{TASK}-v2-fresh-holdout"}, name
            elif dataset is not None:
                assert dataset in {f"{TASK}-v1-test", f"{TASK}-v2-fresh-holdout"} or dataset.startswith(
                    (f"{TASK}-train-", f"{TASK}-validation-")
                ), name
    # Each set is scored under one name: the sets a run has scores on are its dataset inputs, one name per digest
    # (v2's own test split is its fresh hold-out: `eval/<task>-v2-fresh-holdout/...` only, no `-v2-test` copy).
    for run, inputs in zip(runs, digests, strict=True):
        assert {_set_of(n) for n in run.data.metrics if n.startswith("eval/")} == set(inputs)
    assert set(digests[1]) == {f"{TASK}-v1-test", f"{TASK}-v2-fresh-holdout"}
    # Final scores sit at step 0 (charts compare runs, not steps); the champion's, on its own run.
    registry = story.registry
    v1 = registry.version(TASK, 1)
    for name in (f"eval/{TASK}-v1-test/macro_f1", f"eval/{TASK}-v2-fresh-holdout/macro_f1"):
        assert [m.step for m in registry.gateway.metric_history(v1.run_id, name)] == [0]


def test_the_model_description_keeps_a_markdown_table_of_alias_moves(story: Story) -> None:
    description = story.registry.require_task(TASK).description
    assert HISTORY_HEADING in description and "Champion now: **v1**." in description
    table = description.split(HISTORY_HEADING, 1)[1]
    assert "| time (UTC) | alias | move | from | to | who | why |" in table
    assert f"| champion | rollback | v2 | v1 | tester | {ROLLBACK_REASON} |" in table
    assert "| champion | promote | v1 | v2 | tester | retrain (manual): challenger gains" in table
    assert "| champion | promote | - | v1 | tester | trained with --promote (manual) |" in table
    assert description.count(HISTORY_HEADING) == 1  # rewritten, not appended, on every move


def test_a_rolled_back_version_says_so_and_no_longer_looks_promoted(story: Story) -> None:
    v2 = story.registry.version(TASK, 2)
    assert v2.tags["rolled_back"].startswith("from champion to v1 at ")
    assert v2.tags["retrain_decision"] == "promoted, then rolled back"
    assert "**This version was rolled back** from champion" in v2.description
    assert "champion" not in v2.aliases
    assert "### Decision: PROMOTED to champion" in v2.description  # what was decided then stays readable


def test_versions_carry_short_readable_tags_and_a_comparison_card(story: Story, tmp_path: Path) -> None:
    registry = story.registry
    v1, v2 = registry.version(TASK, 1), registry.version(TASK, 2)
    for version in (v1, v2):
        # What the version page shows: the short set only; everything else the product reads back is hidden.
        shown = {k: v for k, v in version.tags.items() if not k.startswith("mlflow.")}
        assert set(shown) <= VISIBLE_TAGS, sorted(set(shown) - VISIBLE_TAGS)
        assert {"method", "base", "trigger", "data_window", "baseline"} <= set(shown)
        assert all(len(value) <= 500 for value in shown.values()), {k: len(v) for k, v in shown.items()}
        assert len(version.tags[TAG_ADAPTER_SHA256]) == 12 and len(version.adapter_sha256) == 64
    assert v2.tags["data_window"].startswith("fresh feedback since ")
    run_names = [registry.run(v.run_id).info.run_name for v in (v1, v2)]
    assert run_names[0].startswith(f"{TASK} v1 prefix (") and run_names[1].startswith(f"{TASK} v2 prefix (")
    reference = f"{EVAL_SET_TAG_PREFIX}reference_test"
    assert v1.tags[reference] == v2.tags[reference] == f"{TASK}-v1-test"
    card = registry.download_run_artifacts(v2.run_id, "comparison/v1-vs-v2.html", tmp_path)
    html = card.read_text()
    assert "sentiment: v1 vs v2" in html and "reference_test" in html and "promoted" in html


def test_no_tag_of_the_model_or_its_versions_is_json_and_the_history_stays_complete(story: Story) -> None:
    from mlflow import MlflowClient

    registry = story.registry
    # Read straight from MLflow: what its UI shows on the model page and on each version page.
    client = MlflowClient(registry.settings.resolved_tracking_uri, registry.settings.resolved_registry_uri)
    model = client.get_registered_model(TASK)
    shown = {("model", key): value for key, value in model.tags.items()}
    assert not [key for key in model.tags if key.startswith("prefix_registry.alias_history.")]
    versions = client.search_model_versions(f"name='{TASK}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    for version in versions:
        shown |= {(f"v{version.version}", key): value for key, value in version.tags.items()}
        assert "data_sizes" not in version.tags
    assert {where: value for where, value in shown.items() if value.lstrip().startswith(("{", "["))} == {}
    assert registry.version(TASK, 1).tags[TAG_LABELS] == "negative,positive"
    assert registry.version(TASK, 1).labels == ["negative", "positive"]

    history = registry.alias_history(TASK)
    assert [e.sequence for e in history] == list(range(1, len(history) + 1))
    champion = [(e.action, e.from_version, e.to_version) for e in history if e.alias == "champion"]
    assert champion == [("promote", None, "1"), ("promote", "1", "2"), ("rollback", "2", "1")]
    # The scores stay readable.
    v1 = registry.version(TASK, 1)
    assert v1.beats_baseline is not None and 0 <= v1.metrics[v1.kind.version_metric] <= 1


def test_version_descriptions_open_with_a_plain_line_and_link_a_card_that_stays_current(
    story: Story, tmp_path: Path
) -> None:
    registry = story.registry
    v1, v2 = registry.version(TASK, 1), registry.version(TASK, 2)
    for version in (v1, v2):
        first = version.description.splitlines()[0]
        assert first.endswith(".") and not set(first) & set("*|`#[]"), first
    assert v1.description.startswith("Trained from scratch (trigger manual): prefix tuning of ")
    assert v2.description.startswith("Retrained from v1 (warm start, trigger manual): prefix tuning of ")
    experiment = registry.experiment_id(TASK)
    link = f"[comparison/v1-vs-v2.html](#/experiments/{experiment}/runs/{v2.run_id}/artifacts/comparison/v1-vs-v2.html)"
    assert f"Comparison card: {link}" in v2.description
    # One gain, rounded once: the decision table prints what the reason says.
    gain = re.search(r"gains ([+-]\d\.\d{3}) ", story.decision["reason"])
    assert gain is not None, story.decision["reason"]
    fresh_row = next(line for line in v2.description.splitlines() if line.startswith("| fresh_holdout |"))
    assert fresh_row.endswith(f"| {gain.group(1)} |"), (fresh_row, story.decision["reason"])
    # The card was rewritten by the rollback: it says so, and where the aliases point now.
    html = registry.download_run_artifacts(v2.run_id, "comparison/v1-vs-v2.html", tmp_path).read_text()
    assert "v2 was rolled back (from champion to v1 at " in html


def test_a_trigger_reason_tag_is_one_short_line_and_links_its_monitoring_run() -> None:
    import json

    from prefix_registry.registry.training_runs import one_line
    from prefix_registry.registry.version_notes import Origin, origin_markdown, run_link

    verdict = {"status": "drift", "drifted_signals": ["text_length", "confidence"], "window_sizes": [150] * 40}
    tag = one_line(json.dumps(verdict, indent=2))
    assert len(tag) <= 200 and "\n" not in tag and tag.endswith("…")
    link = run_link("7", "0123456789abcdef", "monitoring run")
    assert link == "[monitoring run](#/experiments/7/runs/0123456789abcdef)"
    origin = Origin(
        "drift", "drift in text_length of v1", link, "1", True, "prefix", 4, "minilm", "imdb", 120, "-", None
    )
    headline, blank, why = origin_markdown(origin).split("\n", 2)
    # The versions table shows the first line unrendered: one plain sentence.
    assert headline == "Retrained from v1 (warm start, trigger drift): prefix tuning of minilm on 120 rows."
    assert blank == ""
    assert why.startswith(
        "**Why this version exists:** trigger `drift`: drift in text_length of v1 ([monitoring run](#/experiments/7/"
    )


def _bare_version(registry: PrefixRegistry, task: str, tags: dict[str, str], description: str) -> str:
    """A registered version with no adapter behind it: enough for alias moves and what they write."""
    run = registry.gateway.create_run(registry.experiment_id(task))
    return registry.register_version(task, run.info.run_id, run.info.artifact_uri, tags, description).version


def test_a_version_promoted_again_after_its_rollback_no_longer_says_it_was_rolled_back(home: Path) -> None:
    registry = PrefixRegistry(Settings())
    registry.ensure_task("marks")
    v1 = _bare_version(registry, "marks", {}, "v1")
    decided = "Why v2 exists.\n\n### Decision: PROMOTED to champion\n\nReason: it wins."
    v2 = _bare_version(registry, "marks", {"retrain_decision": "promoted"}, decided)
    registry.promote("marks", v1, reason="first")
    registry.promote("marks", v2, reason="retrain")
    registry.rollback("marks", reason="bad answers")
    assert registry.version("marks", v2).tags["retrain_decision"] == "promoted, then rolled back"

    registry.promote("marks", v2, reason="the bad answers came from a broken client")

    again = registry.version("marks", v2)
    assert "rolled_back" not in again.tags
    assert again.tags["retrain_decision"] == "promoted"
    assert "rolled back" not in again.description.lower() and "### Rolled back" not in again.description
    assert again.description.startswith(decided)  # what was decided then stays readable
    assert "**Promoted to champion again**" in again.description and "broken client" in again.description
    assert "champion" in again.aliases
    # The model keeps both moves.
    assert [e.action for e in registry.alias_history("marks")] == ["promote", "promote", "rollback", "promote"]
    table = registry.require_task("marks").description.split(HISTORY_HEADING, 1)[1]
    assert "| rollback | v2 | v1 | tester | bad answers |" in table
    assert "| promote | v1 | v2 | tester | the bad answers came from a broken client |" in table
