"""Linear probe, then tune: start the task head as a logistic regression fitted on the features it reads.

A random head makes the first epochs undo noise, and on a skewed split it settles on the majority class before the
prompt has learned anything (issue 9). Fitted on the frozen model's own head input (with the untrained prompt in
place), the head starts where a linear probe of those features ends, and training moves on from there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from peft import PeftModel
from tqdm.auto import tqdm

from prefix_registry.errors import ConfigError
from prefix_registry.kinds.probe import FittedProbe, fit_probe
from prefix_registry.training.evaluation import batch_order
from prefix_registry.training.splits import DataSplits

HEAD_NAMES = ("classifier", "score")


def trained_head(model: PeftModel) -> torch.nn.Linear:
    """The trained copy of the task head (PEFT wraps the base's head and trains a copy of it)."""
    for name, module in model.named_modules():
        wrapped = name.endswith(tuple(f"{head}.modules_to_save.{model.active_adapter}" for head in HEAD_NAMES))
        if wrapped and isinstance(module, torch.nn.Linear):
            return module
    raise ConfigError(f"no trainable linear task head named {' or '.join(HEAD_NAMES)} in {type(model).__name__}")


@torch.no_grad()
def head_inputs(
    model: PeftModel, tokenizer: Any, texts: list[str], max_length: int, batch_size: int, progress: bool = False
) -> np.ndarray:
    """What the head reads for each text, shape (len(texts), hidden), in eval mode.

    An encoder's head reads one pooled vector per text; a decoder's reads every position and the model keeps the
    last one, which with left padding is position -1.
    """
    head = trained_head(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0].detach()))
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    features = np.zeros((len(texts), head.in_features), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        for indices in tqdm(
            batch_order([len(ids) for ids in encoded], batch_size), desc="probe head", leave=False, disable=not progress
        ):
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt")
            captured.clear()
            model(**batch)
            states = captured[-1]
            features[indices] = (states[:, -1] if states.dim() == 3 else states).float().numpy()
    finally:
        hook.remove()
        model.train(was_training)
    return features


def init_head_as_probe(
    model: PeftModel, tokenizer: Any, splits: DataSplits, max_length: int, batch_size: int, progress: bool = False
) -> FittedProbe:
    """Fit a logistic regression on the head's inputs (C and class weighting on validation macro-F1) and copy it
    into the head. Returns the fitted probe."""
    features = split_head_inputs(model, tokenizer, splits, max_length, batch_size, progress)
    return fit_head_as_probe(model, splits, features)


def split_head_inputs(
    model: PeftModel, tokenizer: Any, splits: DataSplits, max_length: int, batch_size: int, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) head inputs: what a probe for the head is fitted and chosen on."""
    train_x = head_inputs(model, tokenizer, splits.train["text"].tolist(), max_length, batch_size, progress)
    validation_x = head_inputs(model, tokenizer, splits.validation["text"].tolist(), max_length, batch_size, progress)
    return train_x, validation_x


def fit_head_as_probe(model: PeftModel, splits: DataSplits, features: tuple[np.ndarray, np.ndarray]) -> FittedProbe:
    """Fit the probe on `features` (from `split_head_inputs`) and copy it into the head."""
    head = trained_head(model)
    train_x, validation_x = features
    probe = fit_probe(
        train_x,
        splits.train["label"].tolist(),
        validation_x,
        splits.validation["label"].tolist(),
        splits.labels,
        fit_intercept=head.bias is not None,
    )
    weight, bias = probe.class_scores(splits.labels)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        if head.bias is not None:
            head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))
    return probe
