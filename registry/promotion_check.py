"""Promotion verifies first: a version an alias is about to point at must verify and load, as serving would.

`PrefixRegistry` calls its `promotion_check` (this module's `check_promotable` unless replaced) with the target of
every promotion and rollback (the retrain's promotion included) before the alias moves. A version whose adapter
folder no longer matches the registry's digest, or that does not attach to its base, is refused in one line, and the
alias stays where it was: a corrupted version can no longer be promoted for the servers to fail on.

Versions registered before digests (no digest tag, see training/adapter_integrity.py) are promoted with a warning
and without loading: the registry cannot tell their bytes from a tampered copy, and some were never meant to be read
(stores seeded by tests). `prefixctl verify` lists them as legacy.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prefix_registry.errors import PrefixRegistryError, RegistryUnavailable, VersionNotVerified, first_line

if TYPE_CHECKING:
    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.registry.versions import PrefixVersion

logger = logging.getLogger(__name__)


def check_promotable(registry: PrefixRegistry, version: PrefixVersion, alias: str) -> None:
    """Raise VersionNotVerified unless `version` verifies and loads; RegistryUnavailable passes through as it is."""
    if version.integrity.digest is None:
        logger.warning(
            "%s: version %s was registered before adapter digests (legacy): moving %s to it unverified",
            version.task,
            version.version,
            alias,
        )
        return
    from prefix_registry.registry.loading import verify_loadable  # loading imports the store, which imports this

    try:
        verify_loadable(registry, version)
    except RegistryUnavailable:
        raise
    except PrefixRegistryError as error:
        raise VersionNotVerified(
            f"refusing to point {alias} of {version.task!r} at version {version.version}: it does not verify or "
            f"load: {first_line(error)}"
        ) from None
