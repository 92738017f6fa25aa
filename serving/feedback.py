"""What both feedback routes do (`/v1/feedback` with a label, `/v1/generate/feedback` with a reference text): find
the prediction the feedback is about, with the caller's key allowed on its task, and attach the value to it.

    found = find_prediction(keys, rate, log, request.headers.get("authorization"), prediction_id)
    attach(found, "positive", correction=False)      # found.record: the prediction, found.key: the caller's key
"""

from __future__ import annotations

from dataclasses import dataclass

from prefix_registry.serving.auth import KeyGate
from prefix_registry.serving.guards import KeyRateLimit
from prefix_registry.serving.http import HTTPError
from prefix_registry.traffic.api_keys import ApiKey
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.traffic.prediction_records import FeedbackConflict, FeedbackForbidden, PredictionRecord

FLUSH_WAIT_S = 5.0  # a prediction answered a moment ago may still be in the log's write queue


@dataclass(frozen=True)
class FoundPrediction:
    """The prediction a feedback is about, the caller's key (None: anonymous or the local writer), and the log."""

    key: ApiKey | None
    record: PredictionRecord
    log: PredictionLog


def find_prediction(
    keys: KeyGate,
    rate: KeyRateLimit | None,
    log: PredictionLog | None,
    authorization: str | None,
    prediction_id: str,
) -> FoundPrediction:
    """The caller's key (feedback scope) and the logged prediction; HTTPError 401/403/409/404/429 otherwise."""
    key = keys.require(authorization, "feedback")
    if rate is not None:
        rate.take(key.name if key is not None else None)  # before any database work: a flood costs nothing
    if log is None:
        raise HTTPError(409, "this server keeps no prediction log, so it cannot take feedback")
    record = log.get(prediction_id)
    if record is None:
        log.flush(timeout=FLUSH_WAIT_S)
        record = log.get(prediction_id)
    if record is None:
        raise HTTPError(404, f"unknown prediction id {prediction_id!r}")
    keys.check(key, "feedback", record.task)
    return FoundPrediction(key, record, log)


def attach(found: FoundPrediction, value: str, correction: bool) -> None:
    """Attach `value` (a label, or a reference text) to the prediction; 403 / 409 as the log refuses it.

    A correction of another key's feedback needs the admin scope (the local writer, key None, may).
    """
    key = found.key
    try:
        found.log.attach_feedback(
            found.record.prediction_id,
            value,
            key_name=key.name if key is not None else None,
            correction=correction,
            replace_others=key is None or key.allows("admin"),
        )
    except FeedbackForbidden as error:
        raise HTTPError(403, str(error)) from None
    except FeedbackConflict as error:
        raise HTTPError(409, str(error)) from None
