"""Generation, the second task kind: a prefix that writes (a summary, a reply, an extracted field).

(input, target) pairs --causal LM + prefix, greedy decoding--> generated text
judged by ROUGE-L F-measure (higher is better), also reported: ROUGE-1/2 (Google's `rouge-score`), corpus BLEU
(`sacrebleu`, 0-100 as sacrebleu reports it), exact match (after collapsing whitespace)
output drift: output length in words (Wasserstein), the share of empty outputs (Jensen-Shannon on empty/written)
baseline: the untuned base with the same instruction template (zero-shot), scored on the same test split

A generation task's "head outputs" are the generated texts themselves: `predicted`, `prediction_columns` and
`logged_prediction` take an object array of strings (one per row) where a classifier's take logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import sacrebleu
import torch
from rouge_score import rouge_scorer

from prefix_registry.kinds.base import (
    Baseline,
    Direction,
    LoggedPrediction,
    OutputSignal,
    TaskKind,
)

GENERATION_NAME = "generation"
ROUGE_1 = "rouge1"
ROUGE_2 = "rouge2"
ROUGE_L = "rougeL"
BLEU = "bleu"
EXACT_MATCH = "exact_match"
OUTPUT_LENGTH = "output_length"  # words of a generated text: an output drift signal
EMPTY_OUTPUT = "empty_output"  # "empty" or "written" per output: the share of empty outputs, an output drift signal
EMPTY, WRITTEN = "empty", "written"
# The reference file's column of generated texts (as classification's `predicted`).
REFERENCE_GENERATED = "predicted"
# The token label positions a causal LM's loss skips (prompt and padding): PyTorch's and transformers' convention.
IGNORED_LABEL = -100


def rouge_scores(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures over the pairs (Google's `rouge-score`, Porter stemming on), 0.0 for no pairs."""
    scorer = rouge_scorer.RougeScorer([ROUGE_1, ROUGE_2, ROUGE_L], use_stemmer=True)
    totals = dict.fromkeys((ROUGE_1, ROUGE_2, ROUGE_L), 0.0)
    for reference, prediction in zip(references, predictions, strict=True):
        for name, score in scorer.score(reference, prediction).items():
            totals[name] += score.fmeasure
    n = len(references)
    return {name: total / n if n else 0.0 for name, total in totals.items()}


def corpus_bleu(references: Sequence[str], predictions: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU (0-100) of the predictions against one reference each."""
    if not references:
        return 0.0
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def _normalised(text: str) -> str:
    return " ".join(str(text).split())


def generation_metrics(references: Sequence[str], predictions: Sequence[str]) -> dict[str, Any]:
    """ROUGE-1/2/L, BLEU, exact match and the mean output length (words) of `predictions`, and `n`."""
    if len(references) != len(predictions):
        raise ValueError(f"expected one prediction per reference ({len(references)}), got {len(predictions)}")
    references, predictions = [str(r) for r in references], [str(p) for p in predictions]
    matches = [_normalised(r) == _normalised(p) for r, p in zip(references, predictions, strict=True)]
    lengths = [len(p.split()) for p in predictions]
    return {
        **rouge_scores(references, predictions),
        BLEU: corpus_bleu(references, predictions),
        EXACT_MATCH: float(np.mean(matches)) if matches else 0.0,
        OUTPUT_LENGTH: float(np.mean(lengths)) if lengths else 0.0,
        "n": len(references),
    }


@dataclass(frozen=True)
class ZeroShotBaseline(Baseline):
    """The untuned base, prompted with the same instruction template, greedy, on the version's own test split."""

    zero_shot_test_rougeL: float
    zero_shot_test_bleu: float
    zero_shot_test_exact_match: float
    seconds: float

    @property
    def test_score(self) -> float:
        return self.zero_shot_test_rougeL

    def metrics(self, own_test_score: float) -> dict[str, float]:
        return {
            f"baseline_zero_shot_test_{ROUGE_L}": self.zero_shot_test_rougeL,
            f"baseline_zero_shot_test_{BLEU}": self.zero_shot_test_bleu,
            f"baseline_zero_shot_test_{EXACT_MATCH}": self.zero_shot_test_exact_match,
            "baseline_zero_shot_seconds": self.seconds,
            f"own_test_{ROUGE_L}_minus_zero_shot": own_test_score - self.zero_shot_test_rougeL,
        }

    def metrics_by_split(self, own_test_score: float) -> dict[str, dict[str, float]]:
        return {
            "test": {
                f"zero_shot_{ROUGE_L}": self.zero_shot_test_rougeL,
                f"zero_shot_{BLEU}": self.zero_shot_test_bleu,
                f"zero_shot_{EXACT_MATCH}": self.zero_shot_test_exact_match,
                f"{ROUGE_L}_minus_zero_shot": own_test_score - self.zero_shot_test_rougeL,
            },
            "": {"zero_shot_seconds": self.seconds},
        }

    def headline(self) -> dict[str, float]:
        return {
            f"baseline_zero_shot_{ROUGE_L}": self.zero_shot_test_rougeL,
            f"baseline_zero_shot_{BLEU}": self.zero_shot_test_bleu,
        }

    def describe(self) -> str:
        return (
            f"zero-shot base (same instruction) ROUGE-L {self.zero_shot_test_rougeL:.3f}, BLEU "
            f"{self.zero_shot_test_bleu:.1f} on the same split"
        )

    def summary(self) -> dict[str, Any]:
        return asdict(self)


class GenerationKind(TaskKind):
    """Text in, text out: a causal LM with a prefix writes the target; the loss is on the target tokens only."""

    name = GENERATION_NAME
    decision_metric = ROUGE_L
    direction = Direction.HIGHER
    decision_metric_label = "ROUGE-L"
    baseline_label = "zero-shot base"
    metric_names = (ROUGE_L, BLEU, ROUGE_1, ROUGE_2, EXACT_MATCH)
    peft_task_type = "CAUSAL_LM"
    output_signals = (
        OutputSignal(OUTPUT_LENGTH, categorical=False, method="wasserstein", threshold=0.3),
        OutputSignal(EMPTY_OUTPUT, categorical=True, method="jensenshannon", threshold=0.15),
    )
    generates = True

    # --- training -------------------------------------------------------------------------------------------------
    def head_width(self, labels: Sequence[str]) -> int:
        return 0  # no task head: the language-model head writes the answer

    def encode_targets(self, values: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """The target texts themselves (training/generation.py tokenises them with their prompts)."""
        return np.asarray(list(values), dtype=object)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """Next-token cross-entropy of `outputs` (batch, seq, vocab) against token labels `targets` (batch, seq):
        position t predicts label t+1; positions labelled IGNORED_LABEL (prompt, padding) do not count."""
        logits = outputs[:, :-1, :].reshape(-1, outputs.shape[-1])
        labels = targets[:, 1:].reshape(-1)
        return torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORED_LABEL)

    # --- predictions ----------------------------------------------------------------------------------------------
    def predicted(self, outputs: np.ndarray, labels: Sequence[str]) -> list[str]:
        return [str(text) for text in outputs]

    def prediction_columns(self, outputs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
        texts = self.predicted(outputs, labels)
        return {REFERENCE_GENERATED: texts, OUTPUT_LENGTH: np.array([len(t.split()) for t in texts], dtype=float)}

    def logged_prediction(self, outputs: np.ndarray, labels: Sequence[str]) -> LoggedPrediction:
        text = str(np.asarray(outputs, dtype=object).reshape(-1)[0])
        return LoggedPrediction(text, {OUTPUT_LENGTH: float(len(text.split()))})

    def score_column(self, name: str) -> str:
        return name

    def model_schema(self, labels: Sequence[str]) -> dict[str, str]:
        return {REFERENCE_GENERATED: "string", OUTPUT_LENGTH: "double"}

    # --- drift windows --------------------------------------------------------------------------------------------
    def reference_outputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        return _output_columns(frame[OUTPUT_LENGTH])

    def logged_outputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        return _output_columns(frame.get(OUTPUT_LENGTH, pd.Series(dtype=float)))

    # --- judging --------------------------------------------------------------------------------------------------
    def metrics(self, true_values: Sequence[str], predicted: Sequence[Any], labels: Sequence[str]) -> dict[str, Any]:
        return generation_metrics(true_values, predicted)

    def describe_scores(self, metrics: dict[str, Any]) -> str:
        scores = (
            f"ROUGE-L {metrics[ROUGE_L]:.3f}, ROUGE-1 {metrics[ROUGE_1]:.3f}, ROUGE-2 {metrics[ROUGE_2]:.3f}, "
            f"BLEU {metrics[BLEU]:.1f}, exact match {metrics[EXACT_MATCH]:.3f}"
        )
        return f"{scores} (n={metrics['n']})" if "n" in metrics else scores

    @property
    def baseline_metric(self) -> str:
        return f"baseline_zero_shot_test_{self.decision_metric}"


def _output_columns(lengths: pd.Series) -> pd.DataFrame:
    """The output signals of a window from its outputs' lengths in words (an empty output has none)."""
    lengths = lengths.astype(float)
    empty = np.where(lengths.to_numpy() == 0, EMPTY, WRITTEN)
    return pd.DataFrame({OUTPUT_LENGTH: lengths.to_numpy(), EMPTY_OUTPUT: empty}, index=lengths.index)


GENERATION = GenerationKind()
