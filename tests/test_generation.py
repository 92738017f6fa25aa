"""Generation tasks (issue 23, first slice): metrics from rouge-score and sacrebleu, the loss on target tokens only,
and a tiny train + register + evaluate round trip through `prefixctl` on SmolLM2."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from prefix_registry.kinds import GENERATION, kind_named
from prefix_registry.kinds.generation import IGNORED_LABEL, generation_metrics

REFERENCES = ["the cat sat on the mat", "a dog ran in the park"]
PREDICTIONS = ["the cat sat", "a dog ran  in the park"]  # the second equals its reference up to whitespace

# Eight rows: six to train on, one to validate, one to test (split_pairs with 10 % / 10 %).
PAIRS = [
    "the cat sat on the mat today",
    "a dog ran in the park quickly",
    "birds sing early in the morning",
    "rain fell on the old roof",
    "she reads books every night",
    "he cooks pasta for dinner",
    "kids play football after school",
    "the sun rises over hills",
]


def test_generation_is_a_built_in_kind_decided_by_rouge_l() -> None:
    assert kind_named("generation") is GENERATION
    assert (GENERATION.decision_metric, GENERATION.direction.value, GENERATION.peft_task_type) == (
        "rougeL",
        "higher",
        "CAUSAL_LM",
    )
    assert GENERATION.generates and not kind_named(None).generates


def test_the_kinds_metrics_are_rouge_score_and_sacrebleu_on_a_known_pair() -> None:
    metrics = generation_metrics(REFERENCES, PREDICTIONS)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for name in ("rouge1", "rouge2", "rougeL"):
        expected = sum(scorer.score(r, p)[name].fmeasure for r, p in zip(REFERENCES, PREDICTIONS, strict=True)) / 2
        assert metrics[name] == pytest.approx(expected)
    # By hand, first pair: 3 of 6 reference unigrams (P 1, R 1/2: F 2/3), 2 of 5 bigrams (F 4/7), LCS 3 (F 2/3);
    # the second pair is identical word for word (F 1).
    assert metrics["rouge1"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["rouge2"] == pytest.approx((4 / 7 + 1) / 2)
    assert metrics["rougeL"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score)
    assert generation_metrics(REFERENCES, REFERENCES)["bleu"] == pytest.approx(100.0)
    assert metrics["exact_match"] == 0.5
    assert metrics["output_length"] == 4.5
    assert metrics["n"] == 2


@pytest.fixture(scope="module")
def smollm2_tokenizer(model_cache: Path):
    from prefix_registry.training.base_models import load_tokenizer, resolve_base

    return load_tokenizer(resolve_base("smollm2", model_cache))


def test_the_loss_reads_the_target_tokens_only(smollm2_tokenizer) -> None:
    from prefix_registry.training.generation import encode_pair, pad_pairs, prompt_text

    tokenizer = smollm2_tokenizer
    short = encode_pair(tokenizer, "Copy: {input}", "a dog ran", "a dog", max_length=32, max_target_tokens=16)
    long = encode_pair(tokenizer, "Copy: {input}", "the cat sat on the mat", "the cat", 32, 16)
    prompt_ids = tokenizer(prompt_text(tokenizer, "Copy: {input}", "a dog ran"), add_special_tokens=False)["input_ids"]
    target_ids = tokenizer("a dog", add_special_tokens=False)["input_ids"]
    assert short.input_ids == [*prompt_ids, *target_ids, tokenizer.eos_token_id]
    assert short.labels == [IGNORED_LABEL] * len(prompt_ids) + [*target_ids, tokenizer.eos_token_id]

    inputs, labels = pad_pairs([short, long], tokenizer.pad_token_id)
    padding = len(long.input_ids) - len(short.input_ids)
    assert padding > 0
    assert labels[0, len(short.input_ids) :].tolist() == [IGNORED_LABEL] * padding
    assert inputs["attention_mask"][0].tolist() == [1] * len(short.input_ids) + [0] * padding

    # The loss is next-token cross-entropy on the labelled positions: changing the logits anywhere else changes
    # nothing, and it equals the mean of the labelled positions' losses computed here.
    torch.manual_seed(0)
    logits = torch.randn(2, labels.shape[1], 50)
    small_labels = labels.clone()
    small_labels[small_labels != IGNORED_LABEL] %= 50
    loss = GENERATION.loss(logits, small_labels, None)
    counted = [
        torch.nn.functional.cross_entropy(logits[row, t - 1], small_labels[row, t])
        for row in range(2)
        for t in range(1, labels.shape[1])
        if small_labels[row, t] != IGNORED_LABEL
    ]
    assert loss.item() == pytest.approx(torch.stack(counted).mean().item(), rel=1e-5)
    changed = logits.clone()
    unread = (small_labels[:, 1:] == IGNORED_LABEL).nonzero()
    changed[unread[:, 0], unread[:, 1]] = torch.randn(len(unread), 50) * 10  # positions predicting no label
    assert GENERATION.loss(changed, small_labels, None).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_the_training_loss_is_the_one_peft_computes_from_the_same_token_labels(model_cache: Path, method: str) -> None:
    """The trainer's loss, with the virtual tokens in front (prompt tuning) or in the cache (prefix tuning), is the
    causal LM's own loss on the same labels (PEFT prepends ignored labels for prompt tuning's virtual tokens)."""
    import numpy as np
    import pandas as pd

    from prefix_registry.training.base_models import load_base_for_generation, resolve_base
    from prefix_registry.training.config import TrainConfig
    from prefix_registry.training.generation import pad_pairs
    from prefix_registry.training.methods import attach_new_adapter
    from prefix_registry.training.splits import DataSplits
    from prefix_registry.training.trainer import batch_loss, plan_steps

    config = TrainConfig(
        kind="generation", base="smollm2", method=method, virtual_tokens=3, max_length=16, max_new_tokens=6
    )
    base = load_base_for_generation(resolve_base("smollm2", model_cache), seed=0)
    model = attach_new_adapter(base, config)
    model.eval()
    frame = pd.DataFrame({"text": PAIRS[:3], "label": [" ".join(text.split()[:3]) for text in PAIRS[:3]]})
    splits = DataSplits(train=frame, validation=frame, test=frame, labels=[])
    trainable = [p for p in model.parameters() if p.requires_grad]
    plan = plan_steps(trainable, base.tokenizer, splits, config, 1e-2, kind=GENERATION)
    assert plan.pairs is not None
    with torch.no_grad():
        ours = batch_loss(model, plan, base.tokenizer, np.arange(3))
        inputs, labels = pad_pairs(plan.pairs, base.tokenizer.pad_token_id)
        theirs = model(**inputs, labels=labels).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


@pytest.mark.slow
def test_train_registers_a_generation_version_and_evaluate_reports_rouge(home: Path, cli, tmp_path: Path) -> None:
    from prefix_registry.registry.loading import load_training_splits
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.settings import Settings

    data = tmp_path / "pairs.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "summary"])
        writer.writerows([text, " ".join(text.split()[:3])] for text in PAIRS)
    result = cli(
        "train", "--task", "copy", "--kind", "generation", "--base", "smollm2", "--data", str(data),
        "--input-column", "review", "--target-column", "summary", "--method", "prefix",
        "--instruction", "Copy the first three words of: {input}", "--max-new-tokens", "4",
        "--max-steps", "2", "--batch-size", "4", "--virtual-tokens", "4", "--max-length", "32",
        "--no-progress", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = result.json()
    assert (out["version"], out["method"], out["base"], out["steps"]) == ("1", "prefix", "smollm2", 2)
    assert out["split_sizes"] == {"train": 6, "validation": 1, "test": 1}
    assert {"rougeL", "rouge1", "rouge2", "bleu", "exact_match", "baseline_zero_shot_rougeL"} <= set(out["metrics"])

    registry = PrefixRegistry(Settings())
    version = registry.version("copy", "1")
    assert version.kind is GENERATION
    # The registered scores are the kind's metrics of what the version writes on its own test split.
    assert version.metrics[GENERATION.version_metric] == pytest.approx(out["metrics"]["rougeL"], abs=1e-4)
    assert version.metrics[GENERATION.baseline_metric] == pytest.approx(
        out["metrics"]["baseline_zero_shot_rougeL"], abs=1e-4
    )
    stored = registry.run(version.run_id).data.params
    assert stored["instruction"] == "Copy the first three words of: {input}" and stored["kind"] == "generation"

    # The adapter reloaded from the registry with plain PEFT writes what was scored at registration: evaluated on
    # its own test split, it reports the registered scores.
    test_split = tmp_path / "test.csv"
    load_training_splits(registry, version)["test"].to_csv(test_split, index=False)
    evaluated = cli("evaluate", "copy", "--version", "1", "--data", str(test_split), "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    metrics = evaluated.json()["metrics"]
    assert metrics["n"] == 1
    for name in ("rougeL", "rouge1", "rouge2", "bleu", "exact_match"):
        assert version.metrics[f"own_test_{name}"] == pytest.approx(metrics[name], abs=1e-4), name

    # Promotion loads it first (as serving would) and judges it against the zero-shot base (the gate warns here).
    promoted = cli("promote", "copy", "1", "--reason", "the first generation version")
    assert promoted.exit_code == 0, promoted.stderr
    assert registry.resolve("copy").version == "1"
