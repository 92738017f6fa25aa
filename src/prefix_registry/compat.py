"""Refuse to run on library versions the project was not tested with, in one line, before any work starts.

The supported ranges are the ones this package declares (pyproject.toml, read back from the installed package's
metadata), so there is one place that names them. A version outside its range would otherwise surface as a
traceback from deep inside training: transformers 5.24, for example, drops `past_key_values` from BERT's forward,
and PEFT 0.21 then refuses prefix tuning on every encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from prefix_registry.errors import PrefixRegistryError

DISTRIBUTION = "prefix-registry"
# The libraries whose behaviour the adapters, the registry and the monitor depend on in detail.
GUARDED = ("transformers", "peft", "torch", "mlflow", "evidently", "prefect", "pandas", "fastapi", "sqlalchemy")


class UnsupportedDependency(PrefixRegistryError):
    """An installed library outside the range this project supports."""


@dataclass(frozen=True)
class DependencyMismatch:
    """One installed library outside its declared range."""

    name: str
    installed: str | None
    supported: str

    def describe(self) -> str:
        found = "is not installed" if self.installed is None else f"{self.installed} is installed"
        return f"{self.name} {found}; prefix-registry supports {self.name}{self.supported}"


def declared_ranges(distribution: str = DISTRIBUTION) -> dict[str, Requirement]:
    """The runtime requirements (no extras) this package declares, by normalised name."""
    try:
        requirements = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return {}  # running from a source tree that is not installed: nothing declared to compare with
    parsed = (Requirement(line) for line in requirements)
    return {_normalise(r.name): r for r in parsed if r.marker is None or r.marker.evaluate({"extra": ""})}


def find_mismatches(names: tuple[str, ...] = GUARDED, distribution: str = DISTRIBUTION) -> list[DependencyMismatch]:
    """The guarded libraries whose installed version is outside the declared range (or missing)."""
    ranges = declared_ranges(distribution)
    mismatches = []
    for name in names:
        requirement = ranges.get(_normalise(name))
        if requirement is None:
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            mismatches.append(DependencyMismatch(requirement.name, None, str(requirement.specifier)))
            continue
        if not _satisfies(installed, requirement):
            mismatches.append(DependencyMismatch(requirement.name, installed, str(requirement.specifier)))
    return mismatches


def require_supported_versions() -> None:
    """Raise UnsupportedDependency naming the first library outside its range, and how to get the tested set."""
    mismatches = find_mismatches()
    if mismatches:
        others = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        raise UnsupportedDependency(
            f"{mismatches[0].describe()}{others}. Install the tested set with `make install` "
            "(requirements-dev.lock), or pip install the supported range."
        )


def _satisfies(installed: str, requirement: Requirement) -> bool:
    try:
        version = Version(installed)
    except InvalidVersion:
        return False
    # A local build such as torch 2.13.0+cpu is that release.
    return requirement.specifier.contains(Version(version.public), prereleases=True)


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
