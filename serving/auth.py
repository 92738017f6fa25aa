"""Who may call the server: scoped API keys in `Authorization: Bearer KEY`.

No key created yet: every request is anonymous (the server refuses a non-loopback address in that state unless told
`--insecure`). Once any key exists, every request but `/healthz` needs an active one: missing or unknown -> 401,
a key without the scope or for another task -> 403. Keys are read from the store at most every `cache_seconds`, so
a revocation reaches a running server within that time without a database round trip per request.

When the store cannot be read, the keys read before keep working for `grace_seconds`; past that the gate fails
closed: every request that a key would be checked on gets 503 until the store answers again, so a revocation made
while the server could not see it never stays unapplied.
"""

from __future__ import annotations

import logging
import threading
import time

from prefix_registry.serving.http import HTTPError
from prefix_registry.traffic.api_keys import ApiKey, ApiKeyError, ApiKeyStore, hash_key

logger = logging.getLogger(__name__)


class KeyGate:
    """Checks the bearer key of each request against a cached copy of the key store."""

    def __init__(self, store: ApiKeyStore | None, cache_seconds: float = 2.0, grace_seconds: float = 30.0) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.grace_seconds = grace_seconds
        self._unreadable_since: float | None = None
        self._lock = threading.Lock()
        self._by_hash: dict[str, ApiKey] = {}
        self._keys_exist = False
        self._loaded_at = float("-inf")
        if store is not None:
            self._reload()  # at start-up an unreadable store is an error, not an open door

    @property
    def required(self) -> bool:
        self._maybe_reload()
        return self._keys_exist

    def require(self, authorization: str | None, scope: str | None, task: str | None = None) -> ApiKey | None:
        """The caller's key (None when no key exists yet: anonymous); raises HTTPError 401 or 403."""
        if self._failed_closed():
            raise HTTPError(
                503,
                f"the API key store has been unreadable for over {self.grace_seconds:g}s: no key can be checked, "
                "so none is accepted; retry once it is back",
                {"Retry-After": str(max(1, round(self.cache_seconds)))},
            )
        if not self.required:
            return None
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise HTTPError(401, "missing API key: send 'Authorization: Bearer KEY'", {"WWW-Authenticate": "Bearer"})
        key = self._by_hash.get(hash_key(secret.strip()))
        if key is None or not key.active:
            raise HTTPError(401, "unknown or revoked API key", {"WWW-Authenticate": "Bearer"})
        if scope is not None:
            self.check(key, scope, task)
        return key

    @staticmethod
    def check(key: ApiKey | None, scope: str, task: str | None = None) -> None:
        """Raise 403 unless `key` (None: anonymous, allowed) may use `scope` on `task`."""
        if key is None or key.allows(scope, task):
            return
        if not key.allows(scope):
            raise HTTPError(403, f"API key {key.name!r} lacks scope {scope!r} (it has {', '.join(key.scopes)})")
        raise HTTPError(
            403, f"API key {key.name!r} may not act on task {task!r} (allowed: {', '.join(key.tasks or ())})"
        )

    def _maybe_reload(self) -> None:
        if self.store is None or time.monotonic() - self._loaded_at < self.cache_seconds:
            return
        if not self._lock.acquire(blocking=False):
            return  # another request is reloading: use the copy we have
        try:
            self._reload()
            if self._unreadable_since is not None:
                logger.warning("API key store readable again; keys checked against it")
            self._unreadable_since = None
        except ApiKeyError as error:
            now = time.monotonic()
            if self._unreadable_since is None:
                self._unreadable_since = now
            logger.warning(
                "API key store unreadable for %.0fs (keys read before are trusted for %gs): %s",
                now - self._unreadable_since,
                self.grace_seconds,
                error,
            )
            self._loaded_at = now
        finally:
            self._lock.release()

    def _failed_closed(self) -> bool:
        self._maybe_reload()
        since = self._unreadable_since
        return since is not None and time.monotonic() - since > self.grace_seconds

    def _reload(self) -> None:
        assert self.store is not None
        keys = self.store.list_with_hashes()
        self._by_hash = dict(keys)
        self._keys_exist = bool(keys)
        self._loaded_at = time.monotonic()
