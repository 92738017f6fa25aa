"""A causal LM that writes: the instruction template, (input, target) pairs as token labels, greedy decoding, and the
zero-shot baseline (the untuned base with the same template).

    input --prompt_text--> the instruction template filled in (the base's chat template when it has one)
    (input, target) --encode_pair--> EncodedPair: prompt + target + end-of-turn ids, labels IGNORED_LABEL on the prompt
    EncodedPairs[batch] --pad_pairs--> input_ids, attention_mask (right-padded), labels (IGNORED_LABEL on padding)
    model + inputs --generate_texts--> greedy outputs, at most `max_new_tokens` tokens each
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from prefix_registry.kinds.generation import (
    BLEU,
    EXACT_MATCH,
    IGNORED_LABEL,
    ROUGE_L,
    ZeroShotBaseline,
    generation_metrics,
)

# How the input sits in the prompt when the config gives no instruction of its own.
INPUT_PLACEHOLDER = "{input}"


def prompt_text(tokenizer: Any, instruction: str, text: str) -> str:
    """The prompt the model reads before it writes: `instruction` with `{input}` replaced by `text` (or the two on
    separate lines when the instruction has no placeholder), as one user turn of the base's chat template when it has
    one (an instruct model answers in its assistant turn), else the bare filled-in text followed by a newline."""
    if INPUT_PLACEHOLDER in instruction:
        content = instruction.replace(INPUT_PLACEHOLDER, text)
    else:
        content = f"{instruction.strip()}\n\n{text}" if instruction.strip() else text
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        )
    return f"{content}\n"


@dataclass(frozen=True)
class EncodedPair:
    """One training example's token ids and labels (IGNORED_LABEL wherever the loss must not look)."""

    input_ids: list[int]
    labels: list[int]


def encode_pair(
    tokenizer: Any, instruction: str, text: str, target: str, max_length: int, max_target_tokens: int
) -> EncodedPair:
    """Prompt ids (the input cut to `max_length` tokens before templating, so the template's end survives) followed by
    the target's ids (cut to `max_target_tokens`) and the end-of-turn token; only target and end-of-turn are labelled.
    """
    input_ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    prompt = prompt_text(tokenizer, instruction, tokenizer.decode(input_ids))
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"][:max_target_tokens]
    answer = [*target_ids, tokenizer.eos_token_id]
    return EncodedPair(input_ids=[*prompt_ids, *answer], labels=[IGNORED_LABEL] * len(prompt_ids) + answer)


def encode_pairs(
    tokenizer: Any, frame: pd.DataFrame, instruction: str, max_length: int, max_target_tokens: int
) -> list[EncodedPair]:
    """`encode_pair` over a frame's (`text`, `label`) rows."""
    return [
        encode_pair(tokenizer, instruction, text, target, max_length, max_target_tokens)
        for text, target in zip(frame["text"], frame["label"], strict=True)
    ]


def pad_pairs(pairs: Sequence[EncodedPair], pad_token_id: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The model inputs (input_ids, attention_mask) and labels of a batch, right-padded: padding sits after the
    answer, so every row's positions start at 0 as they do after a prefix; padded labels are IGNORED_LABEL."""
    width = max(len(pair.input_ids) for pair in pairs)
    ids = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORED_LABEL, dtype=torch.long)
    for row, pair in enumerate(pairs):
        n = len(pair.input_ids)
        ids[row, :n] = torch.tensor(pair.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(pair.labels)
    return {"input_ids": ids, "attention_mask": mask}, labels


def generate_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    instruction: str,
    max_length: int,
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Greedy continuations of each text's prompt, at most `max_new_tokens` tokens, decoded without special tokens
    and stripped, in the order of `texts`. `model` is anything with transformers' `generate` (a PEFT model, or a bare
    base for zero-shot). Prompts are batched by length and left-padded, so that every row's answer starts at the same
    column and little padding shifts a row's positions (PEFT ignores position ids)."""
    prompts = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        prompts.append(prompt_text(tokenizer, instruction, tokenizer.decode(ids)))
    lengths = [len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: dict[int, str] = {}
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer([prompts[i] for i in rows], add_special_tokens=False, padding=True, return_tensors="pt")
            with torch.no_grad():
                generated = model.generate(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            for row, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
                outputs[row] = text.strip()
    finally:
        tokenizer.padding_side = side
    return [outputs[i] for i in range(len(prompts))]


def measure_zero_shot(
    base_model: Any,
    tokenizer: Any,
    test: pd.DataFrame,
    instruction: str,
    max_length: int,
    max_new_tokens: int,
    batch_size: int = 16,
) -> ZeroShotBaseline:
    """The untuned base (`base_model`: no adapter attached) with the same instruction, greedy, scored on `test`."""
    started = time.perf_counter()
    predicted = generate_texts(
        base_model, tokenizer, test["text"].tolist(), instruction, max_length, max_new_tokens, batch_size
    )
    metrics = generation_metrics(test["label"].tolist(), predicted)
    return ZeroShotBaseline(
        zero_shot_test_rougeL=metrics[ROUGE_L],
        zero_shot_test_bleu=metrics[BLEU],
        zero_shot_test_exact_match=metrics[EXACT_MATCH],
        seconds=time.perf_counter() - started,
    )
