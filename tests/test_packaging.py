"""Specification of what the project installs: exactly what was locked, under one import root, in declared layers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.package_layout import package_folders

REPO = Path(__file__).resolve().parents[1]
LOCKS = ("requirements-dev.lock", "requirements.lock")


def _pins(lock: str) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)", (REPO / lock).read_text(), flags=re.M)
    return {_normalise(name): version for name, version in pins}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(("lock", "extra"), [("requirements-dev.lock", "test"), ("requirements.lock", None)])
def test_lock_satisfies_every_range_in_pyproject(lock: str, extra: str | None) -> None:
    pins = _pins(lock)
    for requirement in _declared(extra):
        name = _normalise(requirement.name)
        if name == "torch":
            continue  # installed first, on its own, as the CPU build (see the Makefile)
        assert name in pins, f"{requirement.name} is declared in pyproject.toml but not pinned in {lock}"
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (
            f"{lock} pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement}"
        )


def test_runtime_lock_pins_the_same_versions_as_the_dev_lock() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    assert set(runtime) < set(dev)
    assert {name: dev[name] for name in runtime} == runtime


@pytest.mark.parametrize("lock", [*LOCKS, "requirements-models.lock"])
def test_every_locked_package_has_hashes(lock: str) -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", (REPO / lock).read_text().split("\n", 3)[3].strip())
    assert entries
    for entry in entries:
        assert "--hash=sha256:" in entry, f"{entry.splitlines()[0]} has no hash in {lock}"


def test_ranges_exclude_the_transformers_release_that_breaks_prefix_tuning_on_encoders() -> None:
    (transformers,) = [r for r in _declared() if r.name == "transformers"]
    assert not transformers.specifier.contains("5.24.0")
    assert transformers.specifier.contains(_pins("requirements.lock")["transformers"])


def test_installed_environment_is_the_locked_one() -> None:
    """The virtualenv the tests run in holds exactly the locked versions of what it has in common with the lock."""
    from importlib import metadata

    pins = _pins("requirements-dev.lock")
    installed = {_normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differing = {name: (pins[name], installed[name]) for name in pins if installed.get(name, pins[name]) != pins[name]}
    missing = sorted(set(pins) - set(installed))
    assert not differing, f"installed versions differ from requirements-dev.lock (locked, installed): {differing}"
    assert not missing, f"locked but not installed: {missing}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("prefix_registry-*.whl")
    return built


def test_wheel_installs_exactly_one_top_level_import_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = archive.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode().split()
    roots = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert roots == {"prefix_registry"}
    assert top_level == ["prefix_registry"]
    layers = {name.split("/")[1] for name in names if name.startswith("prefix_registry/") and name.count("/") >= 2}
    assert {
        *(package.rsplit(".", 1)[-1] for package in package_folders() if package != "prefix_registry"),
        "cli",
    } <= layers


def test_every_package_folder_is_in_the_wheel(wheel: Path) -> None:
    """A new subpackage must be listed in pyproject.toml, or the wheel silently lacks it."""
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {Path(n).parent.as_posix() for n in archive.namelist() if n.endswith("__init__.py")}
    for package, folder in mapping.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).as_posix()
            dotted = package if relative == "." else f"{package}.{relative.replace('/', '.')}"
            assert dotted.replace(".", "/") in in_wheel, f"{dotted} ({init.parent}) is not packaged"


def test_layers_contract_holds_on_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout
