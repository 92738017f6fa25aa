"""The default number of epochs follows the texts' length, and what is stored says what was trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefix_registry.errors import ConfigError
from prefix_registry.training.adapter_files import save_adapter
from prefix_registry.training.base_models import load_base_for_classification, resolve_base
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.epoch_budget import (
    LONG_TEXT_EPOCHS,
    LONG_TEXT_MEAN_TOKENS,
    SHORT_TEXT_EPOCHS,
    default_epochs,
    with_epochs_for,
)
from prefix_registry.training.splits import split_labelled_texts
from prefix_registry.training.trainer import train_prefix
from tests.conftest import tiny_config, tiny_data


def test_long_texts_train_one_epoch_less_than_short_ones() -> None:
    assert (SHORT_TEXT_EPOCHS, LONG_TEXT_EPOCHS) == (4, 3)
    assert default_epochs([20, 30, 25]) == 4
    assert default_epochs([LONG_TEXT_MEAN_TOKENS] * 3) == 4  # on the line: still short
    assert default_epochs([LONG_TEXT_MEAN_TOKENS, LONG_TEXT_MEAN_TOKENS + 3]) == 3
    assert default_epochs([128, 128, 40]) == 3
    assert default_epochs([]) == 4


def test_epochs_the_user_set_are_kept_and_none_is_decided_from_the_tokens(model_cache: Path) -> None:
    base = load_base_for_classification(resolve_base("minilm", model_cache), ["negative", "positive"])
    short = ["a fine film"] * 5
    long = ["a fine film, " * 40] * 5  # ~160 tokens, truncated at max_length
    assert with_epochs_for(TrainConfig(), base.tokenizer, short).epochs == 4
    assert with_epochs_for(TrainConfig(), base.tokenizer, long).epochs == 3
    # Truncation counts: the same long texts cut at 32 tokens are short.
    assert with_epochs_for(TrainConfig(max_length=32), base.tokenizer, long).epochs == 4
    assert with_epochs_for(TrainConfig(epochs=7), base.tokenizer, long).epochs == 7
    with pytest.raises(ConfigError, match="epochs must be >= 1, got 0"):
        TrainConfig(epochs=0)


def test_a_run_left_to_the_default_stores_the_epochs_it_trained(model_cache: Path, tmp_path: Path) -> None:
    data = tiny_data()
    config = tiny_config(epochs=None, max_steps=None, max_length=128)
    splits = split_labelled_texts(data, config.validation_fraction, config.test_fraction, config.seed)
    base = load_base_for_classification(resolve_base(config.base, model_cache), splits.labels, seed=config.seed)
    trained = train_prefix(base, splits, config, progress=False)
    # Rotten Tomatoes sentences are short: four epochs of 8 batches of 16.
    assert trained.config.epochs == 4 and trained.steps == 4 * 8
    save_adapter(trained, tmp_path, data_fingerprint=data.fingerprint)
    assert json.loads((tmp_path / "manifest.json").read_text())["train_config"]["epochs"] == 4
