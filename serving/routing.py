"""Which arm of a rollout answers a request: a stable hash, so every server, at every start, agrees.

    arm = sha256(task, challenger version, routing key) mod 10000 < share * 100   -> the challenger answers

Python's `hash()` is salted per process, so two servers (or one restarted) would split one user's requests; sha256
of the same three strings is the same everywhere. The challenger's version is in the hash so that a new canary
draws a fresh set of users rather than always the same unlucky ones.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000


def bucket(*parts: str) -> int:
    """A stable bucket 0..9999 of the strings `parts` (joined unambiguously)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def takes_challenger(task: str, challenger_version: str, routing_key: str, share: float) -> bool:
    """Whether the canary challenger answers this routing key (sticky: the same key always gets the same arm)."""
    return bucket(task, challenger_version, routing_key) < round(share * BUCKETS / 100)


def in_shadow_sample(task: str, challenger_version: str, request_id: str, share: float) -> bool:
    """Whether the shadow challenger scores this request (`share` percent of requests, by request id)."""
    return share >= 100 or bucket("shadow", task, challenger_version, request_id) < round(share * BUCKETS / 100)
