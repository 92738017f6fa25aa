"""Generation: zero-shot, few-shot and a trained prefix on SmolLM2-135M-Instruct, writing a field of a drug review.

    python -m bench.generation                                   # 979 reviews: ~300 test rows, the rest trains
    python -m bench.generation --limit 60 --test-rows 10 --max-steps 3 --max-new-tokens 6   # a smoke run

The task (bench/datasets.py `drug_conditions`): read a Drugs.com review, write the condition the drug was taken for
("Birth Control", "Depression", ...), a short extracted field, so exact match means something next to ROUGE-L and
BLEU. Three ways to answer, all greedy with the same bounded `max_new_tokens`, scored on the same test rows:

    zero-shot   the untuned base, the task's instruction in its chat template (the generation kind's baseline)
    few-shot    the same, with `--shots` training pairs written into the prompt before the review
    prefix      prefix tuning (generation kind, loss on the target tokens only) on the training rows

Printed per way: ROUGE-L, BLEU, exact match, training seconds (the prefix), and generation throughput in new tokens
per second (the base's raw generate for zero- and few-shot, the PEFT model's for the prefix; new tokens are counted
by re-tokenising the decoded outputs plus one end-of-turn token). Figures go to `bench/results/generation.json`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from bench.datasets import drug_conditions
from bench.machine import load_averages, machine_info
from bench.report import log, publish
from prefix_registry.errors import PrefixRegistryError
from prefix_registry.kinds.generation import BLEU, EXACT_MATCH, ROUGE_L, generation_metrics
from prefix_registry.settings import Settings
from prefix_registry.training.base_models import load_base_for_generation, resolve_base
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.data import LabelledTexts
from prefix_registry.training.generation import generate_texts
from prefix_registry.training.quiet import quiet_libraries
from prefix_registry.training.splits import DataSplits, split_pairs
from prefix_registry.training.trainer import train_prefix

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "generation.json"
INSTRUCTION = (
    "Which medical condition did the writer of this drug review take the drug for? Answer with the name of the "
    "condition only.\n\nReview: {input}"
)
TABLE_WIDTH = 110

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def few_shot_instruction(examples: pd.DataFrame, max_words: int = 60) -> str:
    """INSTRUCTION with worked examples (each review cut to `max_words` words) before the review to answer."""
    shots = "\n\n".join(
        f"Review: {' '.join(text.split()[:max_words])}\nCondition: {target}"
        for text, target in zip(examples["text"], examples["label"], strict=True)
    )
    question, _, review = INSTRUCTION.partition("\n\n")
    return f"{question}\n\n{shots}\n\n{review}\nCondition:"


def split(data: LabelledTexts, test_rows: int, validation_rows: int, seed: int) -> DataSplits:
    """A seeded split with (about) the asked numbers of test and validation rows; the rest trains."""
    n = len(data)
    if test_rows + validation_rows >= n:
        raise PrefixRegistryError(
            f"{n} rows leave nothing to train on after {test_rows} test + {validation_rows} validation"
        )
    # split_pairs takes fractions of the whole and rounds them back to these counts.
    return split_pairs(data, validation_rows / n, test_rows / n, seed)


def score(
    name: str, model: Any, tokenizer: Any, test: pd.DataFrame, instruction: str, config: TrainConfig
) -> dict[str, Any]:
    """One way of answering on the test rows: its metrics and its generation throughput."""
    started = time.perf_counter()
    outputs = generate_texts(
        model, tokenizer, test["text"].tolist(), instruction, config.max_length, config.max_new_tokens,
        config.eval_batch_size,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    new_tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 for text in outputs)
    metrics = generation_metrics(test["label"].tolist(), outputs)
    log(f"{name}: ROUGE-L {metrics[ROUGE_L]:.3f}, {new_tokens / seconds:.1f} new tokens/s")
    return {
        "metrics": metrics,
        "generate_seconds": seconds,
        "new_tokens": new_tokens,
        "tokens_per_second": new_tokens / seconds,
        "examples": [
            {"input": text[:200], "reference": reference, "output": output}
            for text, reference, output in zip(test["text"][:5], test["label"][:5], outputs[:5], strict=False)
        ],
    }


def render_table(results: dict[str, Any], console: Console) -> None:
    settings = results["settings"]
    table = Table(
        title=f"Drug review -> condition on SmolLM2-135M ({results['rows']['test']} test rows, greedy, "
        f"max {settings['max_new_tokens']} new tokens)"
    )
    for column in ("way", "ROUGE-L", "BLEU", "exact match", "train s", "new tokens/s"):
        table.add_column(column, justify="right")
    for name, row in results["ways"].items():
        metrics = row["metrics"]
        table.add_row(
            name,
            f"{metrics[ROUGE_L]:.4f}",
            f"{metrics[BLEU]:.2f}",
            f"{metrics[EXACT_MATCH]:.4f}",
            f"{row['train_seconds']:.1f}" if "train_seconds" in row else "-",
            f"{row['tokens_per_second']:.1f}",
        )
    console.print(table)
    console.print(f"load averages {results['load']}", highlight=False, soft_wrap=True)


@app.command()
def main(
    limit: Annotated[int | None, typer.Option(help="Seeded sample of at most this many reviews.")] = None,
    test_rows: Annotated[int, typer.Option(help="Rows held out for the test.")] = 300,
    validation_rows: Annotated[int, typer.Option(help="Rows held out to pick the best training state.")] = 60,
    shots: Annotated[int, typer.Option(help="Worked examples in the few-shot prompt.")] = 4,
    max_steps: Annotated[int | None, typer.Option(help="Stop the prefix's training after this many steps.")] = None,
    epochs: Annotated[int, typer.Option(help="At most this many passes over the training rows.")] = 3,
    max_minutes: Annotated[float, typer.Option(help="Training time budget of the prefix.")] = 30.0,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy tokens per answer, at most.")] = 12,
    virtual_tokens: Annotated[int, typer.Option(help="Virtual tokens of the prefix.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed for the sample, the split and training.")] = 42,
    out: Annotated[Path, typer.Option(help="Where the JSON results go.")] = DEFAULT_OUT,
    progress: Annotated[bool, typer.Option(help="Progress bars on stderr.")] = True,
) -> None:
    """Zero-shot, few-shot and a trained prefix on the same test rows; print ROUGE-L, BLEU, exact match, speed."""
    quiet_libraries()
    try:
        data = drug_conditions(limit, seed)
        splits = split(data, test_rows, validation_rows, seed)
        config = TrainConfig(
            kind="generation",
            base="smollm2",
            method="prefix",
            instruction=INSTRUCTION,
            max_new_tokens=max_new_tokens,
            max_length=160,
            virtual_tokens=virtual_tokens,
            batch_size=8,
            eval_batch_size=16,
            epochs=epochs,
            max_steps=max_steps,
            max_minutes=max_minutes,
            seed=seed,
        )
        load_before = load_averages()
        base = load_base_for_generation(resolve_base(config.base, Settings().resolved_cache_dir), seed=seed)
        tokenizer = base.tokenizer
        ways: dict[str, dict[str, Any]] = {}
        # The untuned base first: PEFT's prompt methods leave it as it is, but nothing is left to chance.
        ways["zero-shot"] = score("zero-shot", base.model, tokenizer, splits.test, INSTRUCTION, config)
        few_shot = few_shot_instruction(splits.train.head(shots))
        ways[f"few-shot ({shots})"] = score("few-shot", base.model, tokenizer, splits.test, few_shot, config)
        log(f"training the prefix on {len(splits.train)} rows")
        trained = train_prefix(base, splits, config, progress=progress)
        ways["prefix"] = {
            **score("prefix", trained.model, tokenizer, splits.test, INSTRUCTION, config),
            "train_seconds": trained.train_seconds,
            "steps": trained.steps,
            "best_epoch": trained.best_epoch,
            "stop_reason": trained.stop_reason,
        }
    except PrefixRegistryError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    results = {
        "machine": machine_info(("torch", "transformers", "peft")),
        "load": {"before": load_before, "after": load_averages()},
        "data": data.origin,
        "rows": splits.sizes(),
        "settings": {**config.to_dict(), "shots": shots, "limit": limit},
        "ways": ways,
    }
    publish(results, out, render_table, TABLE_WIDTH)


if __name__ == "__main__":
    app()
