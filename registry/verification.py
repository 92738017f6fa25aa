"""`prefixctl verify`: does each version's adapter, as stored now, still match what was registered?"""

from __future__ import annotations

from dataclasses import dataclass

from prefix_registry.errors import AdapterError, RegistryUnavailable, first_line
from prefix_registry.registry.loading import fetch_and_verify
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.versions import PrefixVersion
from prefix_registry.training.adapter_integrity import Integrity

# Shown for a version whose bytes do not match (or could not be read): the other states are `Integrity` values.
FAILED = "FAILED"
LEGACY_NOTE = "unsigned/legacy: registered before folder digests; its manifest is checked against the registry only"


@dataclass(frozen=True)
class VersionCheck:
    """The verdict on one version: `status` is signed, verified, legacy or FAILED, `detail` says why."""

    task: str
    version: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != FAILED

    def summary(self) -> dict[str, object]:
        return {"task": self.task, "version": self.version, "status": self.status, "ok": self.ok, "detail": self.detail}


def check_version(registry: PrefixRegistry, version: PrefixVersion) -> VersionCheck:
    """Download `version`'s adapter folder and check its bytes; never raises for a mismatch (it is the verdict)."""
    try:
        _, verified = fetch_and_verify(registry, version)
    except RegistryUnavailable:
        raise
    except AdapterError as error:
        return VersionCheck(version.task, version.version, FAILED, first_line(error))
    except Exception as error:  # a version whose artifacts cannot be downloaded at all cannot verify either
        return VersionCheck(version.task, version.version, FAILED, f"cannot read its adapter: {first_line(error)}")
    detail = LEGACY_NOTE if verified.status is Integrity.LEGACY else f"folder digest {verified.digest[:12]}… matches"
    return VersionCheck(version.task, version.version, str(verified.status), detail)


def verify_versions(registry: PrefixRegistry, task: str, version: str | None = None) -> list[VersionCheck]:
    """The verdict on one version of `task`, or on every version when `version` is None."""
    versions = [registry.version(task, version)] if version is not None else registry.versions(task)
    return [check_version(registry, v) for v in versions]
