"""How many epochs a run trains when its config leaves it open: as many as keep it cheaper than full fine-tuning.

A prefix step needs no weight gradients and no optimizer state for the frozen base, but it still runs the whole
network forward and back. Measured on MiniLM, 2-core CPU, batches of 32: on short texts (Rotten Tomatoes, ~27 tokens)
a prefix step costs 0.62 of a full fine-tuning step, whose fixed optimizer update over 22.7 M weights weighs most
there; on long texts (drug reviews, ~94 tokens) 0.75. Four prefix epochs plus the head refit then cost less than full
fine-tuning's three on short texts but more on long ones; three prefix epochs fit on both. Rotten Tomatoes needs the
fourth (three fell below the linear probe on two seeds of four); on IMDB and the drug reviews validation peaks by the
third (bench/baselines.py, README "Training defaults").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prefix_registry.training.config import TrainConfig

SHORT_TEXT_EPOCHS = 4
LONG_TEXT_EPOCHS = 3
# Training texts whose mean length (in tokens, after truncation) is above this are long.
LONG_TEXT_MEAN_TOKENS = 64


def default_epochs(token_lengths: Sequence[int]) -> int:
    """The epochs for training texts of these lengths: fewer for long texts, whose steps cost relatively more."""
    if len(token_lengths) == 0:
        return SHORT_TEXT_EPOCHS
    return LONG_TEXT_EPOCHS if float(np.mean(token_lengths)) > LONG_TEXT_MEAN_TOKENS else SHORT_TEXT_EPOCHS


def with_epochs_for(config: TrainConfig, tokenizer: Any, texts: Sequence[str]) -> TrainConfig:
    """`config` with `epochs` decided for `texts` when it is None (a value the user set is kept as it is), so that
    what is logged and stored with a version says how many epochs it was trained for."""
    if config.epochs is not None:
        return config
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=config.max_length)["input_ids"]]
    return config.replace(epochs=default_epochs(lengths))
