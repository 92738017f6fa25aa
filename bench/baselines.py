"""Baseline benchmark: the three continuous-prompt methods against full fine-tuning and a frozen-embedding
logistic regression (the linear probe), on data sets of different shapes (bench/datasets.py), each with the
product's own split.

    python -m bench.baselines                                  # every data set in full (hours on a 2-core CPU)
    python -m bench.baselines --limit 1500                     # a stratified sample of each data set
    python -m bench.baselines --limit 400 --max-steps 5        # a smoke run
    python -m bench.baselines --datasets drug --methods prefix,logreg
    python -m bench.baselines --limit 2000 --test-rows 2000   # test on 2,000 rows the sample left out

Rows (each trained from the same split, `split_labelled_texts` with `TrainConfig()` defaults):
    prefix    prefix tuning on MiniLM with the product defaults
    prompt    prompt tuning, product defaults
    ptuning   P-tuning, product defaults
    full-ft   baseline (a): every MiniLM weight trained, AdamW lr 5e-5, at most 3 epochs (patience 2 epochs),
              otherwise the product trainer's batches and schedule
    logreg    baseline (b): the linear probe every version is judged against (training/baseline.py): logistic
              regression on frozen, mean-pooled, L2-normalised MiniLM embeddings, C and class weighting chosen on
              validation macro-F1

Acceptance, per data set: the default prefix beats the linear probe; the gap to full fine-tuning is reported (goal:
within 3 points of macro-F1); default training takes no longer than full fine-tuning.

For each row: test macro-F1 and accuracy, train seconds, trainable parameters, artifact bytes (what is stored per
task) and ratios against the baselines measured in the same run. The table goes to stdout, progress to stderr, and
everything (with machine info) to a JSON file, `bench/results/baselines.json` by default.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
import typer
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from bench.datasets import DATASETS
from bench.machine import load_average_1m, machine_info
from bench.report import log, publish
from prefix_registry.errors import ConfigError, PrefixRegistryError
from prefix_registry.inference.classification import classify
from prefix_registry.inference.resident import ResidentBase, attach_adapter
from prefix_registry.kinds.classification_metrics import classification_metrics
from prefix_registry.kinds.probe import fit_probe
from prefix_registry.training.adapter_files import ADAPTER_WEIGHTS, save_adapter
from prefix_registry.training.base_models import (
    MINILM,
    LoadedBase,
    load_base_encoder,
    load_base_for_classification,
    resolve_base,
)
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.data import LabelledTexts, stratified_sample
from prefix_registry.training.evaluation import Predictions, predict_probabilities
from prefix_registry.training.features import mean_pooled_embeddings
from prefix_registry.training.quiet import quiet_libraries
from prefix_registry.training.splits import DataSplits, split_labelled_texts

# The product trainer's batch order and seeding: full fine-tuning sees the same batches in the same order.
from prefix_registry.training.trainer import plan_steps, seed_everything, train_one_epoch, train_prefix

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "baselines.json"
ADAPTER_ROWS = ("prefix", "prompt", "ptuning")
FULL_FT = "full-ft"
LOGREG = "logreg"
ROWS = (*ADAPTER_ROWS, FULL_FT, LOGREG)
ROW_TITLES = {
    "prefix": "prefix tuning (product default)",
    "prompt": "prompt tuning",
    "ptuning": "P-tuning",
    FULL_FT: "full fine-tuning",
    LOGREG: "logreg on frozen embeddings",
}
TABLE_WIDTH = 170  # when stdout is a file or pipe (rich would squeeze the table into 80 columns)
# A usual rate for fully fine-tuning a small BERT; the adapters' rates (5e-3 and up) are far too large for it.
FULL_FT_LEARNING_RATE = 5e-5
# Full fine-tuning's own budget (the recipe it was measured with before issue 9), whatever the adapters' defaults.
FULL_FT_EPOCHS = 3
FULL_FT_PATIENCE = 2
ACCEPTANCE_GAP_TO_FULL_FT = 0.03
FULL_MODEL_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class BenchSettings:
    """What a benchmark run covers; None for epochs / max_steps keeps the product defaults."""

    limit: int | None = None
    epochs: int | None = None
    max_steps: int | None = None
    rows: tuple[str, ...] = ROWS
    datasets: tuple[str, ...] = tuple(DATASETS)
    seed: int = 42
    progress: bool = True
    test_rows: int = 0  # > 0: test on up to this many rows the sample left out, instead of the split's test part
    precision: str | None = None  # the trained rows' training precision (None: the product default, fp32)

    def __post_init__(self) -> None:
        if self.test_rows < 0:
            raise ConfigError(f"test_rows must be >= 0, got {self.test_rows}")
        unknown = [row for row in self.rows if row not in ROWS]
        if unknown or not self.rows:
            raise ConfigError(f"unknown row(s) {unknown or '(none given)'}; choose from {', '.join(ROWS)}")
        unknown = [name for name in self.datasets if name not in DATASETS]
        if unknown or not self.datasets:
            raise ConfigError(f"unknown data set(s) {unknown or '(none given)'}; choose from {', '.join(DATASETS)}")

    def train_config(self, method: str = "prefix") -> TrainConfig:
        """The product's default config for `method`, with this run's seed, epochs and step limit."""
        return TrainConfig(method=method, seed=self.seed).replace(
            epochs=self.epochs, max_steps=self.max_steps, precision=self.precision
        )

    def full_ft_config(self) -> TrainConfig:
        """Full fine-tuning's config: its own epochs and patience (in epochs), this run's seed and step limit."""
        return TrainConfig(seed=self.seed, epochs=FULL_FT_EPOCHS, patience=FULL_FT_PATIENCE).replace(
            epochs=self.epochs, max_steps=self.max_steps
        )


@dataclass
class RowResult:
    """One row of the table: how well a way of adapting MiniLM did, what it cost, and what it leaves to store."""

    name: str
    title: str
    test_macro_f1: float
    test_accuracy: float
    train_seconds: float
    # CPU seconds of this process over the same span: what the work cost, whatever else the machine was running
    train_cpu_seconds: float
    trainable_params: int
    artifact_bytes: int
    artifact: str  # what the bytes are
    needs_base: bool  # whether the artifact is useless without the MiniLM weights next to it
    details: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)


def load_splits(settings: BenchSettings, dataset: str) -> tuple[LabelledTexts, DataSplits]:
    """A data set (optionally a stratified sample) split exactly as a product training run splits it."""
    data = DATASETS[dataset].load(settings.limit, settings.seed)
    config = settings.train_config()
    splits = split_labelled_texts(data, config.validation_fraction, config.test_fraction, config.seed)
    if settings.test_rows and settings.limit is not None:
        left_out = left_out_rows(DATASETS[dataset].load(None, settings.seed).frame, data.frame)
        if len(left_out):
            test = stratified_sample(left_out, settings.test_rows, settings.seed).reset_index(drop=True)
            splits = replace(splits, test=test[test["label"].isin(splits.labels)])
    return data, splits


def left_out_rows(full: pd.DataFrame, sample: pd.DataFrame) -> pd.DataFrame:
    """The rows of `full` whose text is not in `sample`: a test set the sample's training never saw."""
    return full[~full["text"].isin(set(sample["text"]))]


def bench_adapter(method: str, data: LabelledTexts, splits: DataSplits, settings: BenchSettings) -> RowResult:
    """Train one continuous-prompt adapter with the product trainer; artifact = its adapter_model.safetensors."""
    config = settings.train_config(method)
    # The task head is initialised when the base loads, before train_prefix seeds; seed here so rows are repeatable.
    seed_everything(config.seed)
    base = load_base_for_classification(resolve_base(config.base), splits.labels)
    cpu_started = time.process_time()
    trained = train_prefix(base, splits, config, progress=settings.progress)
    train_cpu_seconds = time.process_time() - cpu_started
    with tempfile.TemporaryDirectory(prefix="bench-adapter-") as scratch:
        manifest = save_adapter(trained, Path(scratch), data_fingerprint=data.fingerprint)
        artifact_bytes = (Path(scratch) / ADAPTER_WEIGHTS).stat().st_size
        # Scored as the product serves it: the saved adapter attached to the base, through the forward engine.
        served = attach_adapter(ResidentBase(trained.base), method, "bench", Path(scratch), manifest)
    test = _test_metrics(lambda texts: classify(served, texts, batch_size=config.eval_batch_size), splits)
    return RowResult(
        name=method,
        title=ROW_TITLES[method],
        test_macro_f1=test["macro_f1"],
        test_accuracy=test["accuracy"],
        train_seconds=trained.train_seconds,
        train_cpu_seconds=train_cpu_seconds,
        trainable_params=trained.trainable_params,
        artifact_bytes=artifact_bytes,
        artifact=ADAPTER_WEIGHTS,
        needs_base=True,
        details={
            "learning_rate": config.effective_learning_rate,
            "virtual_tokens": config.virtual_tokens,
            "steps": trained.steps,
            "epochs_run": trained.history[-1].epoch,
            "best_epoch": trained.best_epoch,
            "stopped_early": trained.stopped_early,
            "stop_reason": trained.stop_reason,
            "class_weights": trained.class_weights,
            "head_probe": trained.head_probe,
            "head_refit": trained.head_refit,
            "best_validation_macro_f1": trained.best_validation["macro_f1"],
            "validation_macro_f1_by_evaluation": {
                str(report.epoch): report.validation["macro_f1"] for report in trained.history
            },
            "test_predict_seconds": test["seconds"],
            "train_config": config.to_dict(),
        },
    )


def bench_full_finetune(splits: DataSplits, settings: BenchSettings) -> RowResult:
    """Baseline (a): train every MiniLM weight with the product trainer's recipe; artifact = the whole model."""
    config = settings.full_ft_config()
    seed_everything(config.seed)
    base = load_base_for_classification(resolve_base(MINILM), splits.labels)
    cpu_started = time.process_time()
    run = train_full_finetune(base, splits, config, FULL_FT_LEARNING_RATE, progress=settings.progress)
    train_cpu_seconds = time.process_time() - cpu_started
    test = _test_metrics(lambda texts: _predict(base, texts, splits.labels, config), splits)
    with tempfile.TemporaryDirectory(prefix="bench-full-ft-") as scratch:
        base.model.save_pretrained(scratch)
        artifact_bytes = (Path(scratch) / FULL_MODEL_WEIGHTS).stat().st_size
    return RowResult(
        name=FULL_FT,
        title=ROW_TITLES[FULL_FT],
        test_macro_f1=test["macro_f1"],
        test_accuracy=test["accuracy"],
        train_seconds=run["train_seconds"],
        train_cpu_seconds=train_cpu_seconds,
        trainable_params=sum(p.numel() for p in base.model.parameters() if p.requires_grad),
        artifact_bytes=artifact_bytes,
        artifact=f"{FULL_MODEL_WEIGHTS} (the whole fine-tuned model)",
        needs_base=False,
        details={
            **{key: value for key, value in run.items() if key != "train_seconds"},
            "test_predict_seconds": test["seconds"],
        },
    )


def train_full_finetune(
    base: LoadedBase, splits: DataSplits, config: TrainConfig, learning_rate: float, progress: bool = True
) -> dict[str, Any]:
    """Fine-tune all of `base.model` in place, as `train_prefix` trains an adapter, and keep the best epoch.

    Same batch size, epochs / max_steps, max_length, length-grouped batch order, warmup + linear decay, gradient
    clipping and early stopping on validation macro-F1; only the learning rate differs (AdamW, no weight decay).

    Returns:
        train_seconds, steps, epochs_run, best_epoch, stopped_early, validation macro-F1 per epoch, learning_rate.
    """
    model = base.model
    for param in model.parameters():
        param.requires_grad_(True)
    plan = plan_steps(list(model.parameters()), base.tokenizer, splits, config, learning_rate)

    best_f1, best_state, best_epoch, without_gain, stopped_early = -1.0, None, 0, 0, False
    validation_f1: list[float] = []
    started = time.perf_counter()
    bar = tqdm(total=plan.total_steps, desc="train full-ft", disable=not progress, unit="step")
    step = 0
    for epoch in range(1, config.epochs + 1):
        _, step = train_one_epoch(model, plan, base.tokenizer, config.batch_size, bar, step, epoch)
        predicted = _predict(base, splits.validation["text"].tolist(), splits.labels, config).predicted
        f1 = classification_metrics(splits.validation["label"].tolist(), predicted, splits.labels)["macro_f1"]
        validation_f1.append(f1)
        if f1 > best_f1:
            best_f1, best_epoch, without_gain = f1, epoch, 0
            best_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        else:
            without_gain += 1
        if step >= plan.total_steps:
            break
        if without_gain >= config.patience:
            stopped_early = True
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {
        "train_seconds": time.perf_counter() - started,
        "learning_rate": learning_rate,
        "steps": step,
        "epochs_run": len(validation_f1),
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        "best_validation_macro_f1": best_f1,
        "validation_macro_f1_by_epoch": validation_f1,
    }


def bench_embedding_logreg(splits: DataSplits, settings: BenchSettings) -> RowResult:
    """Baseline (b): the product's linear probe (kinds/probe.py) on frozen MiniLM sentence embeddings.

    Train seconds = embedding the train and validation texts + fitting the grid of C and class weightings (the test
    texts' embedding is left out, as the other rows leave out their test predictions). The artifact is the head
    only (coefficients and intercept, np.save'd): it is no use without the MiniLM weights.
    """
    config = settings.train_config()
    encoder, tokenizer = load_base_encoder(resolve_base(MINILM))
    started, cpu_started = time.perf_counter(), time.process_time()
    train_x = embed_texts(encoder, tokenizer, splits.train["text"].tolist(), config.max_length, config.eval_batch_size)
    validation_x = embed_texts(
        encoder, tokenizer, splits.validation["text"].tolist(), config.max_length, config.eval_batch_size
    )
    embed_seconds = time.perf_counter() - started
    probe = fit_probe(
        train_x,
        splits.train["label"].tolist(),
        validation_x,
        splits.validation["label"].tolist(),
        splits.labels,
    )
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started
    head = probe.model
    if list(head.classes_) != splits.labels:
        raise PrefixRegistryError(f"logreg classes {list(head.classes_)} differ from the labels {splits.labels}")

    test_started = time.perf_counter()
    test_x = embed_texts(encoder, tokenizer, splits.test["text"].tolist(), config.max_length, config.eval_batch_size)
    predicted = head.predict(test_x).tolist()
    test = classification_metrics(splits.test["label"].tolist(), predicted, splits.labels)
    test_seconds = time.perf_counter() - test_started
    weights = np.hstack([head.coef_, head.intercept_[:, None]])
    with tempfile.TemporaryDirectory(prefix="bench-logreg-") as scratch:
        path = Path(scratch) / "logreg_head.npy"
        np.save(path, weights)
        artifact_bytes = path.stat().st_size
    return RowResult(
        name=LOGREG,
        title=ROW_TITLES[LOGREG],
        test_macro_f1=test["macro_f1"],
        test_accuracy=test["accuracy"],
        train_seconds=train_seconds,
        train_cpu_seconds=train_cpu_seconds,
        trainable_params=int(weights.size),
        artifact_bytes=artifact_bytes,
        artifact=f"logreg_head.npy ({weights.shape[0]}x{weights.shape[1]} {weights.dtype}; the head only)",
        needs_base=True,
        details={
            "best_c": probe.c,
            "class_weight": probe.class_weight or "none",
            "validation_macro_f1_by_setting": probe.validation_by_setting,
            "best_validation_macro_f1": probe.validation_macro_f1,
            "embed_seconds": embed_seconds,
            "fit_seconds": train_seconds - embed_seconds,
            "embedding": "mean over the attention mask, L2-normalised (as sentence-transformers all-MiniLM-L6-v2)",
            "max_length": config.max_length,
            "test_predict_seconds": test_seconds,
        },
    )


def embed_texts(encoder: torch.nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int):
    """Sentence embeddings, shape (len(texts), hidden), exactly as the product's baseline embeds them."""
    return mean_pooled_embeddings(encoder, tokenizer, texts, max_length, batch_size)


def full_model_size() -> dict[str, int]:
    """MiniLM as shipped: the bytes of its weights file and its parameter count (no task head)."""
    ref = resolve_base(MINILM)
    weights = Path(ref.load_path) / FULL_MODEL_WEIGHTS
    encoder, _ = load_base_encoder(ref)
    return {"bytes": weights.stat().st_size, "params": sum(p.numel() for p in encoder.parameters())}


def add_ratios(rows: list[RowResult], full_model_bytes: int) -> None:
    """Fill each row's ratios against the baselines of the same run (None where a baseline was not run)."""
    by_name = {row.name: row for row in rows}
    full_ft, logreg = by_name.get(FULL_FT), by_name.get(LOGREG)
    for row in rows:
        row.ratios = {
            "macro_f1_vs_full_ft": _ratio(row.test_macro_f1, full_ft and full_ft.test_macro_f1),
            "macro_f1_vs_logreg": _ratio(row.test_macro_f1, logreg and logreg.test_macro_f1),
            "train_seconds_vs_full_ft": _ratio(row.train_seconds, full_ft and full_ft.train_seconds),
            "train_seconds_vs_logreg": _ratio(row.train_seconds, logreg and logreg.train_seconds),
            "train_cpu_seconds_vs_full_ft": _ratio(row.train_cpu_seconds, full_ft and full_ft.train_cpu_seconds),
            "trainable_params_vs_full_ft": _ratio(row.trainable_params, full_ft and full_ft.trainable_params),
            "artifact_bytes_vs_full_ft": _ratio(row.artifact_bytes, full_ft and full_ft.artifact_bytes),
            "artifact_bytes_vs_full_model": _ratio(row.artifact_bytes, full_model_bytes),
        }


def run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    """Run the selected rows on each selected data set and return the results document (what `--out` receives)."""
    full_model = full_model_size()
    started = time.perf_counter()
    sections = [run_dataset(settings, name) for name in settings.datasets]
    return {
        "benchmark": "baselines",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - started,
        "settings": {**asdict(settings), "rows": list(settings.rows), "datasets": list(settings.datasets)},
        "machine": machine_info(("scikit-learn",)),
        "full_model": {"name": MINILM, "file": FULL_MODEL_WEIGHTS, **full_model},
        "datasets": sections,
    }


def run_dataset(settings: BenchSettings, dataset: str) -> dict[str, Any]:
    """Every selected row on one data set's split, with the ratios and the acceptance checks of that split."""
    data, splits = load_splits(settings, dataset)
    log(f"{dataset} ({DATASETS[dataset].shape}): {len(data)} rows, split {splits.sizes()}, labels {splits.labels}")
    rows: list[RowResult] = []
    started = time.perf_counter()
    for name in (row for row in ROWS if row in settings.rows):
        log(f"{dataset} / {name}: {ROW_TITLES[name]}")
        load_before = load_average_1m()
        if name in ADAPTER_ROWS:
            row = bench_adapter(name, data, splits, settings)
        elif name == FULL_FT:
            row = bench_full_finetune(splits, settings)
        else:
            row = bench_embedding_logreg(splits, settings)
        # Other processes on the machine stretch the timings; the load average says by how much.
        row.details["load_average_1m"] = {"before": load_before, "after": load_average_1m()}
        log(f"{dataset} / {name}: test macro-F1 {row.test_macro_f1:.4f}, trained in {row.train_seconds:.1f} s")
        rows.append(row)
    add_ratios(rows, full_model_size()["bytes"])
    return {
        "data": {
            "name": dataset,
            "shape": DATASETS[dataset].shape,
            "origin": data.origin,
            "rows": len(data),
            "fingerprint": data.fingerprint,
            "splits": splits.sizes(),
            "labels": splits.labels,
            "test_class_shares": splits.test["label"].value_counts(normalize=True).round(4).to_dict(),
            "test_source": "the split"
            if splits.test["text"].isin(data.frame["text"]).all()
            else "rows the sample left out",
        },
        "wall_seconds": time.perf_counter() - started,
        "acceptance": acceptance(rows),
        "rows": [asdict(row) for row in rows],
    }


def acceptance(rows: list[RowResult]) -> dict[str, Any]:
    """Per method: does it beat the probe, how far is it from full fine-tuning, does it train no slower than it."""
    by_name = {row.name: row for row in rows}
    full_ft, logreg = by_name.get(FULL_FT), by_name.get(LOGREG)
    checks: dict[str, Any] = {}
    for name in ADAPTER_ROWS:
        row = by_name.get(name)
        if row is None:
            continue
        gap = None if full_ft is None else full_ft.test_macro_f1 - row.test_macro_f1
        checks[name] = {
            "beats_logreg": None if logreg is None else row.test_macro_f1 > logreg.test_macro_f1,
            "minus_logreg": None if logreg is None else row.test_macro_f1 - logreg.test_macro_f1,
            "gap_to_full_ft": gap,
            "within_gap_target": None if gap is None else gap <= ACCEPTANCE_GAP_TO_FULL_FT,
            "no_slower_than_full_ft": None if full_ft is None else row.train_seconds <= full_ft.train_seconds,
            "no_more_cpu_than_full_ft": (
                None if full_ft is None else row.train_cpu_seconds <= full_ft.train_cpu_seconds
            ),
        }
    return checks


def render_table(results: dict[str, Any], console: Console) -> None:
    """One table per data set, then the notes a reader needs to read the byte counts and times right."""
    for section in results["datasets"]:
        render_dataset(section, console)
    full = results["full_model"]
    machine = results["machine"]
    notes = [
        f"full model bytes: {full['bytes']:,} (MiniLM {full['file']}, {full['params']:,} parameters)",
        "artifact bytes: adapters = adapter_model.safetensors (prompt/prefix + task head + trained pooler); full FT "
        "= the whole model.safetensors; logreg = np.save'd coefficients + intercept, the head only.",
        "Adapters and the logreg head still need the frozen MiniLM base to run; only full FT is self-contained.",
        "train s: the training loop with its validation passes (adapters: also the head refit; logreg: embedding "
        "train+validation texts and fitting its grid); model loading and test prediction are not counted. CPU s: "
        "this process's CPU time over the same span, which other work on the machine does not stretch.",
        f"machine: {machine['cpu_count']} CPUs, torch {machine['torch_version']} with {machine['torch_threads']} "
        f"threads; run took {results['wall_seconds'] / 60:.1f} min",
    ]
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)


def render_dataset(section: dict[str, Any], console: Console) -> None:
    data = section["data"]
    table = Table(
        title=f"{data['name']} ({data['shape']}; test n={data['splits']['test']}, train n={data['splits']['train']})",
        title_justify="left",
    )
    for header in (
        "row",
        "test macro-F1",
        "test acc",
        "train s",
        "CPU s",
        "trainable params",
        "artifact bytes",
        "bytes % full model",
        "F1 - logreg",
        "F1 - full FT",
        "time ÷ full FT",
        "CPU ÷ full FT",
    ):
        table.add_column(header, justify="left" if header == "row" else "right", no_wrap=header == "row")
    by_name = {row["name"]: row for row in section["rows"]}
    for row in section["rows"]:
        ratios = row["ratios"]
        table.add_row(
            row["title"],
            f"{row['test_macro_f1']:.4f}",
            f"{row['test_accuracy']:.4f}",
            f"{row['train_seconds']:.1f}",
            f"{row['train_cpu_seconds']:.1f}",
            f"{row['trainable_params']:,}",
            f"{row['artifact_bytes']:,}",
            _percent(ratios["artifact_bytes_vs_full_model"]),
            _difference(row, by_name.get(LOGREG)),
            _difference(row, by_name.get(FULL_FT)),
            _times(ratios["train_seconds_vs_full_ft"], digits=2),
            _times(ratios["train_cpu_seconds_vs_full_ft"], digits=2),
        )
    console.print(table)
    for name, check in section["acceptance"].items():
        if check["beats_logreg"] is None:
            continue
        console.print(
            f"{data['name']} / {name}: {'beats' if check['beats_logreg'] else 'does NOT beat'} the linear probe "
            f"({check['minus_logreg']:+.4f})"
            + (
                f"; {check['gap_to_full_ft']:.4f} below full FT"
                f"{'' if check['within_gap_target'] else ' (over the 0.03 goal)'}; "
                f"{'no slower' if check['no_slower_than_full_ft'] else 'SLOWER'} than full FT"
                f" ({'no more' if check['no_more_cpu_than_full_ft'] else 'MORE'} CPU time)"
                if check["gap_to_full_ft"] is not None
                else ""
            ),
            highlight=False,
            soft_wrap=True,
        )


def _difference(row: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    return "-" if baseline is None else f"{row['test_macro_f1'] - baseline['test_macro_f1']:+.4f}"


def _test_metrics(predict: Any, splits: DataSplits) -> dict[str, Any]:
    started = time.perf_counter()
    predictions: Predictions = predict(splits.test["text"].tolist())
    metrics = classification_metrics(splits.test["label"].tolist(), predictions.predicted, splits.labels)
    return {**metrics, "seconds": time.perf_counter() - started}


def _predict(base: LoadedBase, texts: list[str], labels: list[str], config: TrainConfig) -> Predictions:
    base.model.eval()
    return predict_probabilities(
        lambda batch: base.model(**batch).logits,
        base.tokenizer,
        texts,
        labels,
        max_length=config.max_length,
        batch_size=config.eval_batch_size,
    )


def _ratio(value: float, baseline: float | None) -> float | None:
    return None if baseline is None or baseline == 0 else value / baseline


def _percent(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2%}" if value >= 0.001 else f"{value:.4%}"


def _times(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    limit: Annotated[
        int | None, typer.Option(help="Stratified sample of at most this many reviews (a quick smoke run).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs for every trained row (default: the product's).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop every trained row after this many steps.")] = None,
    datasets: Annotated[str, typer.Option(help=f"Comma-separated data sets, from {','.join(DATASETS)}.")] = ",".join(
        DATASETS
    ),
    methods: Annotated[str, typer.Option(help=f"Comma-separated rows to run, from {','.join(ROWS)}.")] = ",".join(ROWS),
    out: Annotated[Path, typer.Option(help="Where the JSON results go.")] = DEFAULT_OUT,
    seed: Annotated[int, typer.Option(help="Seed for the sample, the split and training.")] = 42,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
    test_rows: Annotated[
        int,
        typer.Option(
            help="With --limit: test every row on up to this many rows the sample left out (a stratified sample), "
            "not on the split's small test part. 2,000 rows put a macro-F1's standard error near 1 point, against "
            "~3 for 200. 0: the split's test part."
        ),
    ] = 0,
) -> None:
    """Benchmark prefix / prompt / P-tuning against full fine-tuning and a frozen-embedding logistic regression.

    Prints the table to stdout and writes every figure, with machine info, to `out` as JSON.
    """
    quiet_libraries()
    try:
        settings = BenchSettings(
            limit=limit,
            epochs=epochs,
            max_steps=max_steps,
            rows=tuple(name.strip() for name in methods.split(",") if name.strip()),
            datasets=tuple(name.strip() for name in datasets.split(",") if name.strip()),
            seed=seed,
            progress=progress,
            test_rows=test_rows,
        )
        settings.train_config()  # refuse bad rows, epochs or max_steps before any model loads
        results = run_benchmark(settings)
    except PrefixRegistryError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    publish(results, out, render_table, TABLE_WIDTH)


if __name__ == "__main__":
    app()
