"""Resident bases, loaded once each, and the attaching of verified adapter folders to them.

A `ResidentBase` is one loaded copy of a base model; an `AttachedPrefix` (attached.py) is one task version on it,
a few hundred kilobytes built from the adapter folder. `PrefixPool` loads each base on first use only, so attaching
another version (a hot swap) costs the adapter's kilobytes, never a base.

    pool = PrefixPool(cache_dir)
    attached = pool.attach(task, version, adapter_dir, manifest)      # base loaded once, then reused
    predictions = pool.predict(attached, ["great film"])                # class probabilities
    logged = pool.logged_predictions(attached, ["great film"])         # what its kind logs, any kind

No lock guards a forward pass: the engine never changes the model (heads, poolers and prefixes are per row, the
cache is built per call) and torch runs concurrent inference on one module safely. On a CPU one forward already
uses every core, so concurrent calls share the cores rather than go faster; the serving layer decides how many
run at once.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file

from prefix_registry.errors import AdapterError, ConfigError
from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.backbones import Backbone, backbone_for, plain_copy
from prefix_registry.inference.classification import classify
from prefix_registry.inference.engine import head_outputs
from prefix_registry.inference.methods import Placement, PrefixShape, strategy_for
from prefix_registry.inference.onnx_backbone import int8_runner
from prefix_registry.inference.precision import BackboneRunner, Precision, TorchRunner
from prefix_registry.kinds.base import LoggedPrediction, TaskKind
from prefix_registry.kinds.classification import CLASSIFICATION
from prefix_registry.settings import Settings
from prefix_registry.training.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterManifest, check_base_matches
from prefix_registry.training.base_models import (
    TASK_HEAD_PREFIXES,
    LoadedBase,
    load_base_for_classification,
    load_base_for_generation,
    resolve_base,
)
from prefix_registry.training.evaluation import Predictions
from prefix_registry.training.pooling import POOLER, stored_pooling

PROMPT_TABLE = "prompt_embeddings"  # PEFT's name for the saved virtual tokens, whatever the method


class ResidentBase:
    """One copy of a base model in memory, shared by every prefix attached to it; never changed after loading.

    Its backbone runs at each precision through one runner per precision, made on first use (int8: the quantised
    graph, cached under `cache_dir`; default: the settings' cache folder).
    """

    def __init__(self, loaded: LoadedBase, cache_dir: Path | None = None) -> None:
        self.loaded = loaded
        self.cache_dir = cache_dir
        self._runners: dict[Precision, BackboneRunner] = {}
        self._runners_lock = threading.Lock()  # two first int8 requests must not export the backbone twice
        # A transformers model: typed as a plain Module, whose attributes torch types as `Tensor | Module`.
        self.model = cast(Any, loaded.model)
        self.model.eval()
        self.tokenizer = loaded.tokenizer
        head_name = next(
            (name for name in TASK_HEAD_PREFIXES if isinstance(getattr(self.model, name, None), torch.nn.Module)),
            None,
        )
        if head_name is None:
            raise AdapterError(f"base {loaded.ref.name!r} has no classification head named {TASK_HEAD_PREFIXES}")
        self.head_name: str = head_name
        self.template_head = plain_copy(getattr(self.model, head_name))
        self.word_embeddings: torch.nn.Module = self.model.get_input_embeddings()
        self.backbone: Backbone = backbone_for(loaded)

    @property
    def name(self) -> str:
        return self.loaded.ref.name

    def runner(self, precision: Precision) -> BackboneRunner:
        """What runs the backbone at `precision` (fp32, bf16, int8), made on first use.

        Raises BaseModelError when the int8 graph cannot be built for this base, ConfigError for AUTO (a request,
        not a precision: serving resolves it per version).
        """
        found = self._runners.get(precision)
        if found is not None:
            return found
        if precision is Precision.AUTO:
            raise ConfigError("the backbone runs at fp32, bf16 or int8; 'auto' is resolved per version by serving")
        with self._runners_lock:
            made: BackboneRunner | None = self._runners.get(precision)
            if made is None:
                if precision is Precision.INT8:
                    made = int8_runner(self.backbone, self.loaded, self.cache_dir or Settings().resolved_cache_dir)
                else:
                    made = TorchRunner(self.backbone, precision)
                self._runners[precision] = made
            return made

    @property
    def fingerprint(self) -> str:
        return self.loaded.fingerprint

    @property
    def device(self) -> torch.device:
        """Where the base's weights are (heads and poolers built for it go there too)."""
        return next(self.model.parameters()).device

    def build_head(self, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
        """A copy of the base's head holding the trained weights, as wide as they are (the task's kind chose the
        width at training: one output per class for classification, one for a regression)."""
        template = self.template_head
        width = weights["weight"].shape[0] if "weight" in weights else None
        if isinstance(template, torch.nn.Linear) and width is not None and template.out_features != width:
            head: torch.nn.Module = torch.nn.Linear(template.in_features, width, bias=template.bias is not None)
        else:
            head = plain_copy(template)
        return _loaded(head, weights, f"task head does not fit base {self.name!r}").to(self.device)

    def build_pooler(self, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
        """A copy of the base's pooler holding the trained weights (adapters trained with `train_pooler`)."""
        template = getattr(self.backbone, "pooler", None)
        if not isinstance(template, torch.nn.Module):
            raise AdapterError(f"adapter has trained pooler weights but base {self.name!r} has no pooler")
        return _loaded(plain_copy(template), weights, f"trained pooler does not fit base {self.name!r}").to(self.device)


def read_adapter(
    base: ResidentBase, task: str, version: str, adapter_dir: Path, manifest: AdapterManifest
) -> tuple[str, dict[str, torch.Tensor], PrefixShape | None]:
    """A verified adapter folder's PEFT type, weights and (prefix tuning) key/value shape, checked against `base`.

    Raises AdapterError when it was trained on another base, is of an unsupported method or lacks its prompt table.
    """
    check_base_matches(manifest, base.loaded)
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    weights = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    peft_type = str(config.get("peft_type"))
    try:
        strategy = strategy_for(peft_type)
    except AdapterError as error:
        raise AdapterError(f"{task} v{version}: {error}") from None
    if PROMPT_TABLE not in weights:
        raise AdapterError(f"{task} v{version}: adapter has no {PROMPT_TABLE} tensor")
    shape = None
    if strategy.placement is Placement.CACHE:
        heads = int(config["num_attention_heads"])
        shape = PrefixShape(int(config["num_layers"]), heads, int(config["token_dim"]) // heads)
    return peft_type, weights, shape


def attach_adapter(
    base: ResidentBase,
    task: str,
    version: str,
    adapter_dir: Path,
    manifest: AdapterManifest,
    kind: TaskKind = CLASSIFICATION,
) -> AttachedPrefix:
    """Build the runnable form of a verified adapter folder (PEFT's files) on `base`, as a version of `kind`.

    Raises AdapterError when the adapter was trained on another base, is of an unsupported method, or lacks its
    prompt table or head weights.
    """
    started = time.perf_counter()
    peft_type, weights, shape = read_adapter(base, task, version, adapter_dir, manifest)
    backbone_name = str(base.model.base_model_prefix)
    pooler_weights = _module_weights(weights, f"{backbone_name}.{POOLER}")
    return AttachedPrefix(
        task=task,
        version=version,
        peft_type=peft_type,
        labels=list(manifest.labels),
        max_length=manifest.max_length,
        virtual_tokens=weights[PROMPT_TABLE].float(),
        head=base.build_head(_head_weights(weights, base.head_name)),
        base=base,
        prefix_shape=shape,
        pooling=stored_pooling(manifest.train_config),
        pooler=base.build_pooler(pooler_weights) if pooler_weights else None,
        adapter_bytes=(adapter_dir / ADAPTER_WEIGHTS).stat().st_size,
        load_seconds=time.perf_counter() - started,
        kind=kind,
    )


class PrefixPool:
    """Resident bases, loaded once each, and the prefixes attached to them."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._bases: dict[str, ResidentBase] = {}
        self._lock = threading.Lock()  # guards loading only: two first requests must not load a base twice
        self.base_loads = 0
        self._decoders: dict[str, ResidentBase] = {}  # causal LMs for generating prefixes (inference/generation.py)

    @property
    def bases(self) -> dict[str, ResidentBase]:
        return dict(self._bases)

    def base_for(self, name: str, labels: list[str]) -> ResidentBase:
        """The resident copy of base `name`, loading it on first use only."""
        with self._lock:
            resident = self._bases.get(name)
            if resident is None:
                loaded = load_base_for_classification(resolve_base(name, self.cache_dir), labels)
                resident = ResidentBase(loaded, self.cache_dir)
                self._bases[name] = resident
                self.base_loads += 1
            return resident

    def attach(
        self,
        task: str,
        version: str,
        adapter_dir: Path,
        manifest: AdapterManifest,
        kind: TaskKind = CLASSIFICATION,
    ) -> AttachedPrefix:
        """Build the servable form of a verified adapter folder on its (resident) base; `kind` (the version's task
        kind, classification by default) stays with it and turns its head outputs into predictions."""
        started = time.perf_counter()
        if kind.generates:
            attached = self._attach_generator(task, version, adapter_dir, manifest, kind)
            return dataclasses.replace(attached, load_seconds=time.perf_counter() - started)
        base = self.base_for(manifest.base, manifest.labels)
        attached = attach_adapter(base, task, version, adapter_dir, manifest, kind)
        # Reported attach time includes a first base load, as before the engine moved here.
        return dataclasses.replace(attached, load_seconds=time.perf_counter() - started)

    def _attach_generator(
        self, task: str, version: str, adapter_dir: Path, manifest: AdapterManifest, kind: TaskKind
    ) -> AttachedPrefix:
        """A generating version on the resident causal LM of its base (loaded on first use, beside any classifier
        copy of the same base: the two have different heads)."""
        # Imported here: generation.py builds on this module's ResidentBase.
        from prefix_registry.inference.generation import ResidentDecoder, attach_generator

        with self._lock:
            decoder = self._decoders.get(manifest.base)
            if decoder is None:
                decoder = ResidentDecoder(load_base_for_generation(resolve_base(manifest.base, self.cache_dir)))
                self._decoders[manifest.base] = decoder
                self.base_loads += 1
        if not isinstance(decoder, ResidentDecoder):
            raise TypeError(f"expected a resident decoder for {manifest.base!r}, got {type(decoder).__name__}")
        return attach_generator(decoder, task, version, adapter_dir, manifest, kind)

    def predict(self, attached: AttachedPrefix, texts: Sequence[str], batch_size: int = 32) -> Predictions:
        """Class probabilities of `attached` for `texts` (length-sorted batches through the engine)."""
        return classify(attached, texts, batch_size=batch_size)

    def logged_predictions(
        self, attached: AttachedPrefix, texts: Sequence[str], batch_size: int = 32
    ) -> list[LoggedPrediction]:
        """What `attached` predicts for each text, as its kind logs it: one engine pass over the texts
        (length-sorted batches), each row of head outputs turned into a prediction by `attached.kind`."""
        outputs = head_outputs(attached, texts, batch_size=batch_size).numpy()
        return [attached.kind.logged_prediction(row, attached.labels) for row in outputs]


def _loaded(module: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise AdapterError(f"{what}: {str(error).splitlines()[0]}") from None
    return module.eval()


def _module_weights(weights: dict[str, torch.Tensor], module_path: str) -> dict[str, torch.Tensor]:
    """The tensors PEFT saved for a trained module (`modules_to_save`), by the module's own parameter names."""
    found = {}
    for key, tensor in weights.items():
        for prefix in (f"base_model.{module_path}.modules_to_save.default.", f"base_model.{module_path}."):
            if key.startswith(prefix):
                found[key.removeprefix(prefix)] = tensor
                break
    return found


def _head_weights(weights: dict[str, torch.Tensor], head_name: str) -> dict[str, torch.Tensor]:
    found = _module_weights(weights, head_name)
    if not found:
        raise AdapterError(f"adapter has no weights for the task head {head_name!r}")
    return found
