"""Load a registered version onto its base model, refusing a corrupted adapter or a different base.

The loaded version predicts through the forward engine (`inference`), the same code that serves it: what
`prefixctl evaluate`, the retrain judge and `compare` report is what the server answers. PEFT stays the training
path and the export format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.classification import classify
from prefix_registry.inference.engine import head_outputs
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.versions import PrefixVersion
from prefix_registry.training.adapter_files import AdapterManifest, check_base_matches, load_checkpoint
from prefix_registry.training.adapter_integrity import Integrity, VerifiedAdapter, verify_registered_adapter
from prefix_registry.training.base_models import LoadedBase, load_base_for_generation, resolve_base
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.evaluation import Predictions
from prefix_registry.training.generation import generate_texts


@dataclass
class LoadedPrefix:
    """A version ready to predict: verified adapter attached to its verified base."""

    version: PrefixVersion
    manifest: AdapterManifest
    adapter_dir: Path
    attached: AttachedPrefix
    integrity: Integrity = Integrity.LEGACY  # how far the adapter's bytes were checked against the registry

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def predict_outputs(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Raw head outputs (n_texts, head width), for the version's kind to read; through the serving engine."""
        return head_outputs(self.attached, texts, batch_size=batch_size, progress=progress).numpy()

    @property
    def base(self) -> LoadedBase:
        return self.attached.base.loaded

    def predict(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> Predictions:
        """Class probabilities for `texts`, through the engine that serves the version."""
        return classify(self.attached, texts, batch_size=batch_size, progress=progress)


def fetch_verified_adapter(registry: PrefixRegistry, version: PrefixVersion) -> tuple[Path, AdapterManifest]:
    """Download a version's adapter folder and check its bytes against the registry's digest of them."""
    adapter_dir, verified = fetch_and_verify(registry, version)
    return adapter_dir, verified.manifest


def fetch_and_verify(registry: PrefixRegistry, version: PrefixVersion) -> tuple[Path, VerifiedAdapter]:
    """As `fetch_verified_adapter`, with how far the check went (signed, verified, legacy)."""
    adapter_dir = registry.download_version_folder(version, "adapter")
    verified = verify_registered_adapter(adapter_dir, version.integrity, registry.settings.signing_key_text)
    return adapter_dir, verified


def verify_loadable(registry: PrefixRegistry, version: PrefixVersion) -> Integrity:
    """Fetch, verify and attach `version` on its base, as serving would (a kind that generates: as `load_generator`
    loads it); raises what would stop it serving."""
    if version.kind.generates:
        return load_generator(registry, version).integrity
    return load_version(registry, version).integrity


def load_version(registry: PrefixRegistry, version: PrefixVersion, pool: PrefixPool | None = None) -> LoadedPrefix:
    """Verify `version` and attach it to its base: the resident one in `pool`, else a freshly loaded copy.

    Raises AdapterError when a file is corrupted or the adapter was trained on another base.
    """
    adapter_dir, verified = fetch_and_verify(registry, version)
    manifest = verified.manifest
    pool = pool or PrefixPool(registry.settings.resolved_cache_dir)
    attached = pool.attach(version.task, version.version, adapter_dir, manifest, version.kind)
    return LoadedPrefix(
        version=version, manifest=manifest, adapter_dir=adapter_dir, attached=attached, integrity=verified.status
    )


@dataclass(frozen=True)
class LoadedGenerator:
    """A registered version of a kind that generates, on a fresh copy of its decoder base, with its instruction."""

    version: PrefixVersion
    manifest: AdapterManifest
    model: Any  # a peft.PeftModelForCausalLM
    tokenizer: Any
    config: TrainConfig
    integrity: Integrity

    def generate(self, texts: Sequence[str]) -> list[str]:
        """Greedy outputs (at most the version's `max_new_tokens`), read with the version's instruction template."""
        config = self.config
        return generate_texts(
            self.model,
            self.tokenizer,
            list(texts),
            config.instruction,
            config.max_length,
            config.max_new_tokens,
            config.eval_batch_size,
        )


def load_generator(registry: PrefixRegistry, version: PrefixVersion) -> LoadedGenerator:
    """Verify `version` (a kind that generates) and load it with plain PEFT onto its base, refusing another base.

    This is PEFT's own model (what registration, `evaluate` and the retrain judge score); the server decodes the same
    adapter through `inference/generation.py`, which writes the same text greedily (test_generation_serving.py)."""
    from peft import PeftModel

    adapter_dir, verified = fetch_and_verify(registry, version)
    manifest = verified.manifest
    base = load_base_for_generation(resolve_base(manifest.base, registry.settings.resolved_cache_dir))
    check_base_matches(manifest, base)
    model = PeftModel.from_pretrained(base.model, str(adapter_dir))
    model.eval()
    config = TrainConfig.from_stored(manifest.train_config)
    return LoadedGenerator(version, manifest, model, base.tokenizer, config, verified.status)


def load_warm_start(registry: PrefixRegistry, version: PrefixVersion) -> dict:
    """The full trainable state of `version` (P-tuning's encoder included), to continue training from it."""
    return load_checkpoint(registry.download_version_folder(version, "checkpoint"))


def load_reference_frame(registry: PrefixRegistry, version: PrefixVersion) -> pd.DataFrame:
    """The validation texts with `version`'s predictions, kept at training time: the default drift reference."""
    folder = registry.download_version_folder(version, "reference")
    return pd.read_parquet(folder / "validation.parquet")


def load_training_splits(registry: PrefixRegistry, version: PrefixVersion) -> dict[str, pd.DataFrame]:
    """Every split (`train`, `validation`, `test`) of the data `version` was trained on, from one download."""
    folder = registry.download_version_folder(version, "data")
    return {split: pd.read_parquet(folder / f"{split}.parquet") for split in ("train", "validation", "test")}
