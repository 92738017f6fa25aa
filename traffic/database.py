"""The prediction log's and the API keys' databases, opened by the project's shared helper
(`prefix_registry.database`) with the prediction log's own error type.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from prefix_registry.database import error_reason, mask_url, open_database_engine
from prefix_registry.traffic.prediction_records import PredictionLogError

__all__ = ["create_database_engine", "error_reason", "mask_url"]


def create_database_engine(url: str) -> Engine:
    """An engine for `url`; raises PredictionLogError (password masked) when the URL is invalid."""
    return open_database_engine(url, purpose="prediction log", error=PredictionLogError)
