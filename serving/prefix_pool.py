"""Many prefixes on one resident base model, swapped in milliseconds.

A `ResidentBase` is one loaded copy of a base model. An `AttachedPrefix` is one task version: its trained prompt (or
prefix key/values) and task head, a few hundred kilobytes, immutable once built. A request takes the task's current
`AttachedPrefix` when it starts and runs every batch on that object, so moving the task to a new version never
touches a request in flight, and never reloads the base.

PEFT keeps one active adapter per model (and ignores per-row adapter names for prefix tuning), so this module
applies prompts itself, exactly as PEFT's sequence-classification forward does (tests compare the two).

    pool = PrefixPool(cache_dir)
    attached = pool.attach(task, version, adapter_dir, manifest)      # base loaded once, then reused
    predictions = pool.predict(attached, ["great film"])
"""

from __future__ import annotations

import copy
import inspect
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file
from transformers import DynamicCache

from prefix_registry.errors import AdapterError
from prefix_registry.training.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterManifest, check_base_matches
from prefix_registry.training.base_models import (
    TASK_HEAD_PREFIXES,
    LoadedBase,
    load_base_for_classification,
    resolve_base,
)
from prefix_registry.training.config import Pooling
from prefix_registry.training.evaluation import Predictions, predict_probabilities
from prefix_registry.training.pooling import install_pooling, stored_pooling

PREFIX_TUNING = "PREFIX_TUNING"
PROMPT_TYPES = {"PROMPT_TUNING", "P_TUNING"}


@dataclass(frozen=True)
class PrefixShape:
    """How a prefix table unfolds into per-layer key/values (PEFT's `get_prompt` layout)."""

    num_layers: int
    num_heads: int
    head_dim: int


@dataclass(eq=False)
class AttachedPrefix:
    """One task version ready to serve on a resident base: prompt tensor, task head, labels."""

    task: str
    version: str
    peft_type: str
    labels: list[str]
    max_length: int
    prompt: torch.Tensor  # prompt learning: (tokens, hidden); prefix tuning: (tokens, layers * 2 * kv_dim)
    head: torch.nn.Module
    base: ResidentBase
    prefix_shape: PrefixShape | None = None
    pooling: Pooling = Pooling.CLS
    adapter_bytes: int = 0
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_seconds: float = 0.0

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.prompt.shape[0])


class ResidentBase:
    """One copy of a base model in memory, shared by every prefix attached to it.

    Forward passes are serialised by a lock: the head module is set per call, and on a CPU one forward already uses
    every core.
    """

    def __init__(self, loaded: LoadedBase) -> None:
        self.loaded = loaded
        # A transformers model: typed as a plain Module, whose attributes torch types as `Tensor | Module`.
        self.model = cast(Any, loaded.model)
        self.tokenizer = loaded.tokenizer
        self.lock = threading.Lock()
        head_name = next(
            (name for name in TASK_HEAD_PREFIXES if isinstance(getattr(self.model, name, None), torch.nn.Module)),
            None,
        )
        if head_name is None:
            raise AdapterError(f"base {loaded.ref.name!r} has no classification head named {TASK_HEAD_PREFIXES}")
        self.head_name: str = head_name
        self.template_head = getattr(self.model, self.head_name)
        self.takes_cache = "past_key_values" in inspect.signature(self.model.forward).parameters
        self.word_embeddings = self.model.get_input_embeddings()
        # What the head reads is set per call: prefixes trained with different poolings share this base.
        self.pooling = install_pooling(self.model, Pooling.CLS)

    @property
    def name(self) -> str:
        return self.loaded.ref.name

    @property
    def fingerprint(self) -> str:
        return self.loaded.fingerprint

    @torch.no_grad()
    def logits(self, attached: AttachedPrefix, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits of `attached` for one tokenised batch."""
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        size, n_virtual = input_ids.shape[0], attached.num_virtual_tokens
        mask = torch.cat([torch.ones(size, n_virtual, dtype=attention_mask.dtype), attention_mask], dim=1)
        extra = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        with self.lock:
            if self.pooling is not None:
                self.pooling.mode = attached.pooling
            if attached.peft_type == PREFIX_TUNING:
                cache = _prefix_cache(attached, size)
                if self.takes_cache:
                    return self._with_head(
                        attached.head, input_ids=input_ids, attention_mask=mask, past_key_values=cache, **extra
                    )
                # Encoders such as BERT take the cache in the backbone only: pool, then apply the task's head.
                outputs = self.model.base_model(
                    input_ids=input_ids, attention_mask=mask, past_key_values=cache, **extra
                )
                pooled = outputs[1] if len(outputs) > 1 and outputs[1] is not None else outputs[0][:, 0]
                return attached.head(pooled)
            embeddings = self.word_embeddings(input_ids)
            prompts = attached.prompt.to(embeddings.dtype).unsqueeze(0).expand(size, -1, -1)
            if "token_type_ids" in extra:
                zeros = torch.zeros(size, n_virtual, dtype=extra["token_type_ids"].dtype)
                extra["token_type_ids"] = torch.cat([zeros, extra["token_type_ids"]], dim=1)
            return self._with_head(
                attached.head, inputs_embeds=torch.cat([prompts, embeddings], dim=1), attention_mask=mask, **extra
            )

    def _with_head(self, head: torch.nn.Module, **inputs: Any) -> torch.Tensor:
        setattr(self.model, self.head_name, head)
        try:
            return self.model(**inputs).logits
        finally:
            setattr(self.model, self.head_name, self.template_head)

    def build_head(self, weights: dict[str, torch.Tensor], n_labels: int) -> torch.nn.Module:
        """A copy of the base's head sized for `n_labels`, holding the trained weights."""
        template = self.template_head
        if isinstance(template, torch.nn.Linear) and template.out_features != n_labels:
            head: torch.nn.Module = torch.nn.Linear(template.in_features, n_labels, bias=template.bias is not None)
        else:
            head = copy.deepcopy(template)
        try:
            head.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise AdapterError(f"task head does not fit base {self.name!r}: {str(error).splitlines()[0]}") from None
        return head.eval()


class PrefixPool:
    """Resident bases, loaded once each, and the prefixes attached to them."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._bases: dict[str, ResidentBase] = {}
        self._lock = threading.Lock()
        self.base_loads = 0

    @property
    def bases(self) -> dict[str, ResidentBase]:
        return dict(self._bases)

    def base_for(self, name: str, labels: list[str]) -> ResidentBase:
        """The resident copy of base `name`, loading it on first use only."""
        with self._lock:
            resident = self._bases.get(name)
            if resident is None:
                resident = ResidentBase(load_base_for_classification(resolve_base(name, self.cache_dir), labels))
                self._bases[name] = resident
                self.base_loads += 1
            return resident

    def attach(self, task: str, version: str, adapter_dir: Path, manifest: AdapterManifest) -> AttachedPrefix:
        """Build the servable form of a verified adapter folder on its (resident) base."""
        started = time.perf_counter()
        base = self.base_for(manifest.base, manifest.labels)
        check_base_matches(manifest, base.loaded)
        config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        weights = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
        peft_type = config.get("peft_type")
        if peft_type != PREFIX_TUNING and peft_type not in PROMPT_TYPES:
            raise AdapterError(f"{task} v{version}: unsupported adapter type {peft_type!r}")
        if "prompt_embeddings" not in weights:
            raise AdapterError(f"{task} v{version}: adapter has no prompt_embeddings tensor")
        head_weights = _head_weights(weights, base.head_name)
        shape = None
        if peft_type == PREFIX_TUNING:
            heads = int(config["num_attention_heads"])
            shape = PrefixShape(int(config["num_layers"]), heads, int(config["token_dim"]) // heads)
        return AttachedPrefix(
            task=task,
            version=version,
            peft_type=peft_type,
            labels=list(manifest.labels),
            max_length=manifest.max_length,
            prompt=weights["prompt_embeddings"].float(),
            head=base.build_head(head_weights, len(manifest.labels)),
            base=base,
            prefix_shape=shape,
            pooling=stored_pooling(manifest.train_config),
            adapter_bytes=(adapter_dir / ADAPTER_WEIGHTS).stat().st_size,
            load_seconds=time.perf_counter() - started,
        )

    def predict(self, attached: AttachedPrefix, texts: Sequence[str], batch_size: int = 32) -> Predictions:
        """Class probabilities of `attached` for `texts` (length-sorted batches; the base lock is held per batch)."""
        return predict_probabilities(
            lambda batch: attached.base.logits(attached, batch),
            attached.base.tokenizer,
            texts,
            attached.labels,
            max_length=attached.max_length,
            batch_size=batch_size,
        )


def _prefix_cache(attached: AttachedPrefix, batch_size: int) -> DynamicCache:
    """A fresh cache holding the prefix key/values for every row (the forward pass appends to it)."""
    shape = attached.prefix_shape
    assert shape is not None
    table = attached.prompt.view(attached.num_virtual_tokens, shape.num_layers * 2, shape.num_heads, shape.head_dim)
    # (tokens, 2*layers, heads, head_dim) -> (2*layers, heads, tokens, head_dim), one key and one value per layer
    per_layer = table.permute(1, 2, 0, 3).unsqueeze(1).expand(-1, batch_size, -1, -1, -1)
    return DynamicCache([(per_layer[2 * i], per_layer[2 * i + 1]) for i in range(shape.num_layers)])


def _head_weights(weights: dict[str, torch.Tensor], head_name: str) -> dict[str, torch.Tensor]:
    found = {}
    for key, tensor in weights.items():
        for prefix in (f"base_model.{head_name}.modules_to_save.default.", f"base_model.{head_name}."):
            if key.startswith(prefix):
                found[key.removeprefix(prefix)] = tensor
                break
    if not found:
        raise AdapterError(f"adapter has no weights for the task head {head_name!r}")
    return found
