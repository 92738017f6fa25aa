"""Where a retrain's labels come from, and how much any one source may weigh.

Feedback labels are both the training data and the judge of the next retrain, so whoever sends labels steers it.
Before a retrain uses them:

- labels sent with a revoked API key are left out (revoking a key takes its labels out of every later retrain), and
  a label it replaced by a correction counts again (each key's label is kept apart: traffic/prediction_store.py);
- one label per text (the newest), the newest `limit` texts;
- no single key supplies more than `max_share` of the fresh labels, nor of the judge set: a key over the cap keeps
  only its newest labels up to it. Labels sent without a key (in-process writers, a keyless server on loopback,
  source `unkeyed`) are trusted: they count towards the total but are not capped;
- the counts per source, kept and dropped, go into the retrain decision.

    fresh, sources = trusted_fresh_labels(log, "sentiment", since, limit=5000)
    holdout = cap_judge_set(holdout, sources)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from prefix_registry.traffic.prediction_log import PredictionLog

UNKEYED = "unkeyed"


@dataclass
class LabelSources:
    """Which source (API key name, or `unkeyed`) sent each kept text, and the counts behind the decision."""

    by_text: dict[str, str]
    max_share: float
    counts: dict[str, int] = field(default_factory=dict)  # e.g. labels_from:alice, dropped_over_cap:mallory

    def record(self, prefix: str, frame: pd.DataFrame) -> None:
        for source, n in frame["source"].value_counts().sort_index().items():
            self.counts[f"{prefix}:{source}"] = int(n)


def cap_per_source(frame: pd.DataFrame, max_share: float, exempt: tuple[str, ...] = (UNKEYED,)) -> pd.DataFrame:
    """Keep each capped source's newest rows up to C, the largest count with C <= max_share * (rows kept).

    `frame` needs a `source` column and is taken to be oldest first. Exempt sources are kept whole. With a single
    capped source and nothing else, nothing of it is kept: one key alone can never be the whole of the data.
    """
    if frame.empty or max_share >= 1.0:
        return frame
    counts = frame["source"].value_counts()
    capped = {source: int(n) for source, n in counts.items() if source not in exempt}
    exempt_total = int(sum(n for source, n in counts.items() if source in exempt))
    cap = 0
    for candidate in range(max(capped.values(), default=0), 0, -1):
        kept = exempt_total + sum(min(n, candidate) for n in capped.values())
        if candidate <= max_share * kept:
            cap = candidate
            break
    keep = frame["source"].isin(exempt) | (frame.groupby("source").cumcount(ascending=False) < cap)
    return frame[keep]


def trusted_fresh_labels(
    log: PredictionLog,
    task: str,
    since: datetime | None,
    limit: int,
    max_share: float | None = None,
    revoked: set[str] | None = None,
) -> tuple[pd.DataFrame, LabelSources]:
    """Fresh (text, label) rows for a retrain, one per text, with revoked keys left out and each key capped.

    `max_share` and `revoked` default to the settings' `max_label_share` and the key store's revoked keys.
    """
    if max_share is None or revoked is None:
        from prefix_registry.settings import Settings
        from prefix_registry.traffic.api_keys import ApiKeyStore

        settings = Settings()
        max_share = settings.max_label_share if max_share is None else max_share
        if revoked is None:
            store = ApiKeyStore.from_settings(settings)
            try:
                revoked = store.revoked_names()
            finally:
                store.close()
    log.flush(timeout=30)
    frame = log.window(task, since=since, labelled_only=True)
    sources = LabelSources({}, max_share)
    if frame.empty:
        return pd.DataFrame(columns=["text", "label"]), sources
    frame = frame.assign(source=frame["feedback_key"].fillna(UNKEYED).astype(str))
    sources.record("revoked_left_out", frame[frame["source"].isin(revoked)])
    # Each prediction's label as it stands without the revoked keys (the label one of them replaced comes back).
    trusted = log.trusted_feedback(task, since, revoked)
    frame = frame[frame["prediction_id"].isin(list(trusted))]
    frame = frame.assign(
        feedback_label=[trusted[i][0] for i in frame["prediction_id"]],
        source=[trusted[i][1] or UNKEYED for i in frame["prediction_id"]],
    )
    frame = frame.sort_values("created_at").drop_duplicates("text", keep="last").tail(limit)
    kept = cap_per_source(frame, max_share)
    sources.record("over_cap_left_out", frame.drop(index=kept.index))
    sources.record("labels_from", kept)
    sources.by_text = dict(zip(kept["text"].astype(str), kept["source"], strict=True))
    return pd.DataFrame({"text": kept["text"].astype(str), "label": kept["feedback_label"].astype(str)}), sources


def cap_judge_set(holdout: pd.DataFrame, sources: LabelSources) -> pd.DataFrame:
    """The held-out judge set with each key capped at the same share (rows over it are left out)."""
    if holdout.empty:
        return holdout
    tagged = holdout.assign(source=holdout["text"].map(sources.by_text).fillna(UNKEYED))
    kept = cap_per_source(tagged, sources.max_share)
    sources.record("judged_from", kept)
    return kept.drop(columns=["source"])
