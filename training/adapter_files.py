"""An adapter as files: standard PEFT files, the label map, a manifest, and a warm-start checkpoint.

    adapter/                         what a version serves, and what `export` hands out
      adapter_config.json            PEFT's config
      adapter_model.safetensors      the trained prompt / prefix and the task head
      labels.json                    class index -> label
      manifest.json                  fingerprints, checksums, lineage (AdapterManifest)
    checkpoint/
      trainable_state.safetensors    every trained tensor (P-tuning's encoder too), to warm-start a successor

PEFT saves only the final prompt of P-tuning (its encoder is dropped), hence the separate checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prefix_registry.errors import AdapterError
from prefix_registry.training import pooling as pooling_module
from prefix_registry.training.base_models import MINILM, SMOLLM2, LoadedBase
from prefix_registry.training.pooling import Pooling, stored_pooling
from prefix_registry.training.trainer import TrainedPrefix

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LABELS_FILE = "labels.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILE = "trainable_state.safetensors"
MANIFEST_FORMAT = 1
# What every manifest must list a checksum for.
REQUIRED_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG, LABELS_FILE)
# PEFT stores the machine path the base was loaded from; a portable name is more use to whoever loads an export.
PORTABLE_BASE_NAMES = {
    MINILM: "sentence-transformers/all-MiniLM-L6-v2",
    SMOLLM2: "HuggingFaceTB/SmolLM2-135M-Instruct",
}


@dataclass
class AdapterManifest:
    """What an adapter is, what made it, and how to check that its files are intact."""

    method: str
    base: str
    base_fingerprint: str
    data_fingerprint: str
    labels: list[str]
    max_length: int
    virtual_tokens: int
    adapter_sha256: str
    files: dict[str, str]
    train_config: dict[str, Any]
    parent_version: str | None = None
    trigger: str = "manual"
    trigger_reason: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format_version: int = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, directory: Path) -> AdapterManifest:
        path = directory / MANIFEST_FILE
        if not path.exists():
            raise AdapterError(f"adapter folder {directory} has no {MANIFEST_FILE}")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in values.items() if k in known})
        except (json.JSONDecodeError, TypeError) as error:
            raise AdapterError(f"{path} is not a valid manifest: {error}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_adapter(
    trained: TrainedPrefix,
    directory: Path,
    data_fingerprint: str,
    parent_version: str | None = None,
    trigger: str = "manual",
    trigger_reason: str | None = None,
) -> AdapterManifest:
    """Write the adapter folder (PEFT files, labels, manifest) and return its manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    trained.model.save_pretrained(str(directory))
    config_path = directory / ADAPTER_CONFIG
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = PORTABLE_BASE_NAMES.get(trained.base.ref.name, trained.base.ref.name)
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True), encoding="utf-8")
    (directory / LABELS_FILE).write_text(
        json.dumps({"labels": trained.labels, "id2label": dict(enumerate(trained.labels))}, indent=2),
        encoding="utf-8",
    )
    files = {name: sha256_file(directory / name) for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG, LABELS_FILE)}
    manifest = AdapterManifest(
        method=trained.config.method.value,
        base=trained.base.ref.name,
        base_fingerprint=trained.base.fingerprint,
        data_fingerprint=data_fingerprint,
        labels=trained.labels,
        max_length=trained.config.max_length,
        virtual_tokens=trained.config.virtual_tokens,
        adapter_sha256=files[ADAPTER_WEIGHTS],
        files=files,
        train_config=trained.config.to_dict(),
        parent_version=parent_version,
        trigger=trigger,
        trigger_reason=trigger_reason,
    )
    (directory / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def verify_adapter_files(directory: Path, expected_sha256: str | None = None) -> AdapterManifest:
    """Check every file the manifest lists against its sha256; return the manifest.

    The manifest must list the weights, the PEFT config and the label map (an empty `files` map checks nothing, so it
    is refused). `expected_sha256` (the registry's) is compared with the weights' own bytes, never with the hash the
    manifest states. Raises AdapterError naming the first file that is unlisted, missing or changed.
    Folder digests (adapter_integrity.py) are what loading from the registry checks; this is their per-file part.
    """
    manifest = AdapterManifest.read(directory)
    unlisted = [name for name in REQUIRED_FILES if name not in manifest.files]
    if unlisted:
        raise AdapterError(
            f"adapter manifest in {directory} lists no checksum for {', '.join(unlisted)}; expected one for each of "
            f"{', '.join(REQUIRED_FILES)}"
        )
    for name, recorded in manifest.files.items():
        path = directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not path.is_file():
            raise AdapterError(f"adapter file {name} is missing from {directory}")
        actual = sha256_file(path)
        if actual != recorded:
            raise AdapterError(
                f"adapter file {name} is corrupted: sha256 {actual[:12]}… does not match the recorded {recorded[:12]}…"
            )
    if expected_sha256 is not None and manifest.files[ADAPTER_WEIGHTS] != expected_sha256:
        raise AdapterError(
            f"adapter sha256 {manifest.files[ADAPTER_WEIGHTS][:12]}… does not match the registry's "
            f"{expected_sha256[:12]}…"
        )
    return manifest


def check_base_matches(manifest: AdapterManifest, base: LoadedBase) -> None:
    """Refuse to put an adapter on a base other than the one it was trained on."""
    if manifest.base_fingerprint != base.fingerprint:
        raise AdapterError(
            f"adapter was trained on base {manifest.base!r} (fingerprint {manifest.base_fingerprint[:12]}…) but the "
            f"loaded base {base.ref.name!r} has fingerprint {base.fingerprint[:12]}…"
        )


EXPORT_POOLING_MODULE = "pooling.py"
EXPORT_README = "README.md"


def write_loading_helpers(out: Path, manifest: AdapterManifest) -> list[str]:
    """Next to an exported adapter: how to load it with transformers and peft alone, and, for a head that reads
    mean-pooled states, the (dependency-free) module that makes the base pool that way. Returns the files written."""
    pooling = stored_pooling(manifest.train_config)
    base = PORTABLE_BASE_NAMES.get(manifest.base, manifest.base)
    lines = [
        f"# {manifest.method} adapter on {base}",
        "",
        f"Labels, in class-index order: {', '.join(manifest.labels)}. Texts were truncated to {manifest.max_length} "
        "tokens.",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForSequenceClassification",
        "",
        f'base = AutoModelForSequenceClassification.from_pretrained("{base}", num_labels={len(manifest.labels)})',
    ]
    written = [EXPORT_README]
    if pooling is Pooling.MEAN:
        shutil.copy2(Path(pooling_module.__file__), out / EXPORT_POOLING_MODULE)
        written.append(EXPORT_POOLING_MODULE)
        lines += [
            "# An encoder's head reads the mean of its token states, not the [CLS] pooler (no effect on decoders).",
            "# pooling.py is in this folder and needs only torch.",
            "from pooling import install_pooling",
            'install_pooling(base, "mean")',
        ]
    lines += ["model = PeftModel.from_pretrained(base, EXPORT_FOLDER).eval()", "```", ""]
    (out / EXPORT_README).write_text("\n".join(lines), encoding="utf-8")
    return written


def save_checkpoint(trained: TrainedPrefix, directory: Path) -> Path:
    """Write the full trainable state for warm starts; returns the file written."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    save_file({name: t.contiguous() for name, t in trained.trainable_state().items()}, str(path))
    return path


def load_checkpoint(directory: Path) -> dict[str, torch.Tensor]:
    path = directory / CHECKPOINT_FILE
    if not path.exists():
        raise AdapterError(f"no warm-start checkpoint at {path}")
    return load_file(str(path))
