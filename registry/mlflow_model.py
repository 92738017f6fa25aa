"""Every version is an MLflow model: `mlflow.pyfunc.load_model("models:/TASK@champion")` and `mlflow models serve`
answer what the server answers.

A version's source is its run's `adapter/` folder, so that folder is the MLflow model: MLflow's files lie beside the
adapter's, which stay exactly as they were registered (same names, bytes, digest).

    adapter/
      adapter_config.json, adapter_model.safetensors, labels.json, manifest.json   the adapter (digest tags)
      MLmodel                 pyfunc flavour: loader module prefix_registry.inference.pyfunc, its config, signature
      requirements.txt, python_env.yaml, conda.yaml   pinned: this package, the base's package, the engine's libraries
      input_example.json, serving_input_example.json  a `text` column
      pooling.py              the pooling of a head that reads mean-pooled states (training/pooling.py, torch only)

The signature's input is one `text` column; its output the columns the version's kind names (classification:
label, confidence, prob_<label>...). The registry records the MLflow files' names and digest (and signature) in
their own version tags, next to the adapter's (adapter_integrity.py), so `prefixctl verify` checks both.

New versions get these files before their run's artifacts are uploaded (`add_mlflow_model`, from training_runs.py);
versions registered before are given them by `prefixctl relog` (`relog_version`), which uploads them into the same
folder and adds the tags, leaving the adapter's files and tags as they are.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pandas as pd

from prefix_registry.errors import AdapterError, PrefixRegistryError, RegistryUnavailable, first_line
from prefix_registry.inference.pyfunc import TEXT_COLUMN, PyfuncConfig
from prefix_registry.kinds import TaskKind
from prefix_registry.registry.gateway import PyfuncSpec, save_pyfunc_model
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.versions import PrefixVersion, model_integrity_tags
from prefix_registry.training import pooling as pooling_module
from prefix_registry.training.adapter_files import EXPORT_POOLING_MODULE, AdapterManifest
from prefix_registry.training.adapter_integrity import (
    MLFLOW_LOAD_RECORD,
    RegisteredIntegrity,
    folder_files,
    model_files_record,
    verify_registered_adapter,
)
from prefix_registry.training.base_models import BASE_DISTRIBUTIONS

logger = logging.getLogger(__name__)

LOADER_MODULE = "prefix_registry.inference.pyfunc"
# A made-up text, not one of the task's: an input example is shown to everyone who can read the model.
EXAMPLE_TEXTS = ("A short text to score.",)
# The distributions the pyfunc runs on, pinned at the versions that logged it (the base's package is added).
ENGINE_DISTRIBUTIONS = ("prefix-registry", "mlflow", "torch", "transformers", "peft", "safetensors", "numpy", "pandas")
# What `add_mlflow_model` writes. A relog interrupted between its upload and its tags leaves these in the folder,
# unrecorded: the next relog tolerates them, and overwrites them.
MODEL_FILE_NAMES = frozenset(
    {
        "MLmodel",
        "conda.yaml",
        "python_env.yaml",
        "requirements.txt",
        "input_example.json",
        "serving_input_example.json",
        EXPORT_POOLING_MODULE,
    }
)


def pinned_requirements(base: str) -> list[str]:
    """`name==version` of each distribution the pyfunc needs, as installed now; a packaged base adds its package.

    One not installed as a distribution (this package run from a bare source tree) is left out with a warning: the
    version still registers, and its requirements say what they could.
    """
    names = [*ENGINE_DISTRIBUTIONS, *([BASE_DISTRIBUTIONS[base]] if base in BASE_DISTRIBUTIONS else [])]
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            logger.warning("%s is not installed as a distribution: the MLflow model's requirements leave it out", name)
    return pinned


def pyfunc_spec(
    task: str, run_id: str, manifest: AdapterManifest, kind: TaskKind, adapter_digest: str, adapter_files: list[str]
) -> PyfuncSpec:
    """The MLflow model of an adapter whose files are `adapter_files` with folder digest `adapter_digest`."""
    config = PyfuncConfig(
        task=task, run_id=run_id, kind=kind.name, adapter_digest=adapter_digest, adapter_files=tuple(adapter_files)
    )
    return PyfuncSpec(
        loader_module=LOADER_MODULE,
        model_config=config.to_dict(),
        inputs={TEXT_COLUMN: "string"},
        outputs=kind.model_schema(manifest.labels),
        input_example=pd.DataFrame({TEXT_COLUMN: list(EXAMPLE_TEXTS)}),
        pip_requirements=pinned_requirements(manifest.base),
        metadata={
            "prefix_registry": {
                "task": task,
                "kind": kind.name,
                "method": manifest.method,
                "base": manifest.base,
                "base_fingerprint": manifest.base_fingerprint,
                "labels": list(manifest.labels),
            }
        },
    )


def write_model_files(
    destination: Path, spec: PyfuncSpec, record: RegisteredIntegrity, signing_key: str | None
) -> RegisteredIntegrity:
    """Write the MLflow model files of `spec` into the new folder `destination` and return `record` (the adapter's)
    with them recorded beside it (AdapterError when one would replace an adapter file)."""
    names = save_pyfunc_model(destination, spec)
    shutil.copy2(Path(pooling_module.__file__), destination / EXPORT_POOLING_MODULE)
    names.append(EXPORT_POOLING_MODULE)
    return model_files_record(destination, names, record, signing_key)


def add_mlflow_model(
    adapter_dir: Path,
    task: str,
    run_id: str,
    manifest: AdapterManifest,
    kind: TaskKind,
    record: RegisteredIntegrity,
    signing_key: str | None = None,
) -> RegisteredIntegrity:
    """Make the adapter folder about to be uploaded (its `record` just taken) an MLflow model: its files are written
    beside the adapter's, and the returned record holds both (the adapter's part unchanged)."""
    if record.digest is None:
        raise AdapterError(f"adapter folder {adapter_dir} has no digest recorded; expected its registration record")
    spec = pyfunc_spec(task, run_id, manifest, kind, record.digest, list(record.files))
    with tempfile.TemporaryDirectory(prefix="mlflow-model-") as scratch:
        written = Path(scratch) / "model"
        recorded = write_model_files(written, spec, record, signing_key)
        for name in recorded.model_files:
            target = adapter_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(written / name, target)
    return recorded


class RelogStatus(StrEnum):
    """What `relog` did to a version."""

    RELOGGED = "relogged"  # its MLflow model files were uploaded and recorded
    ALREADY = "already"  # it was an MLflow model already: nothing changed
    FAILED = "FAILED"  # its adapter does not verify (or could not be read): nothing changed


@dataclass(frozen=True)
class Relogged:
    """The outcome of relogging one version."""

    task: str
    version: str
    status: RelogStatus
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is not RelogStatus.FAILED

    def summary(self) -> dict[str, object]:
        return {
            "task": self.task,
            "version": self.version,
            "status": str(self.status),
            "ok": self.ok,
            "detail": self.detail,
        }


def relog_version(registry: PrefixRegistry, version: PrefixVersion) -> Relogged:
    """Make a version registered before versions were MLflow models into one: its adapter is downloaded and verified
    (a damaged one is refused), the MLflow files are uploaded into its folder and recorded in its tags. The adapter's
    files, digest and tags stay as they are. Never raises for a version that does not verify (it is the outcome)."""
    task, number = version.task, version.version
    if version.is_mlflow_model:
        return Relogged(task, number, RelogStatus.ALREADY, "already an MLflow model")
    try:
        return _relog(registry, version)
    except RegistryUnavailable:
        raise
    except PrefixRegistryError as error:
        return Relogged(task, number, RelogStatus.FAILED, first_line(error))


def _relog(registry: PrefixRegistry, version: PrefixVersion) -> Relogged:
    adapter_dir = registry.download_version_folder(version, "adapter")
    # What a relog cut off between its upload and its tags left (and MLflow's record of loading it since).
    leftover = {name for name in folder_files(adapter_dir) if name in {*MODEL_FILE_NAMES, MLFLOW_LOAD_RECORD}}
    signing_key = registry.settings.signing_key_text
    verified = verify_registered_adapter(adapter_dir, version.integrity, signing_key, beside=leftover)
    record = version.integrity
    # A version registered before digests: the digest of the adapter just verified the legacy way is what the
    # pyfunc checks from now on.
    files = list(record.files) or sorted(set(folder_files(adapter_dir)) - leftover)
    spec = pyfunc_spec(version.task, version.run_id, verified.manifest, version.kind, verified.digest, files)
    with tempfile.TemporaryDirectory(prefix="mlflow-model-") as scratch:
        written = Path(scratch) / "model"
        recorded = write_model_files(written, spec, record, signing_key)
        stale = sorted(leftover - {*recorded.model_files, MLFLOW_LOAD_RECORD})
        if stale:
            raise AdapterError(
                f"adapter folder of version {version.version} holds {', '.join(stale)} from an earlier relog, which "
                "this one does not write; expected only the adapter's files and MLflow's"
            )
        # Files first, tags second: a relog cut off in between leaves unrecorded files that the next one tolerates.
        registry.gateway.log_artifacts(version.run_id, written, "adapter")
    registry.set_version_tags(version.task, version.version, model_integrity_tags(recorded))
    detail = f"MLflow model files {', '.join(recorded.model_files)} logged beside adapter {verified.digest[:12]}…"
    return Relogged(version.task, version.version, RelogStatus.RELOGGED, detail)


def relog_versions(registry: PrefixRegistry, task: str, version: str | None = None) -> list[Relogged]:
    """Relog one version of `task`, or every version when `version` is None."""
    versions = [registry.version(task, version)] if version is not None else registry.versions(task)
    return [relog_version(registry, v) for v in versions]
