"""Where the package's source lives, read from pyproject.toml's package-dir (the one place that lists it), so a new
layer folder is covered by every source-reading test without editing each of them."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_folders() -> dict[str, str]:
    """Dotted package name → its folder relative to the repository root (`prefix_registry` → `src/prefix_registry`)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    return dict(setuptools["package-dir"])


def layer_folders() -> list[str]:
    """The layer folders (kinds, training, ...) in pyproject's order, the root package's own folder left out."""
    return [folder for package, folder in package_folders().items() if package != "prefix_registry"]


def source_folders() -> list[str]:
    """Every folder of the import root: the layers and src/prefix_registry."""
    return list(package_folders().values())
