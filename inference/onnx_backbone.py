"""The int8 backbone: a base's backbone exported once to ONNX, quantised by ONNX Runtime, run per stacked batch.

Why ONNX Runtime: its dynamic int8 quantisation (int8 weights, activations quantised per batch) runs MiniLM at about
4x torch's fp32 on a CPU with VNNI/AMX, within a few hundredths of a logit; torchao's int8 dynamic-activation
quantisation ran eagerly at 0.7x fp32 on the same CPU, and torch.ao's `quantize_dynamic` is deprecated.

One graph serves every method. Its inputs are what batch.py stacks, the prefixes left as they are (float32, per row):

    inputs_embeds   (rows, slots, hidden)             prompt rows' virtual tokens already in front of their text
    attention_mask  (rows, cache slots + slots)       1 where a row has a real key
    position_ids    (rows, slots)
    past_keys       (layers, rows, kv heads, cache slots, head_dim)   prefix-tuning rows' key/values, zero-padded
    past_values     (layers, rows, kv heads, cache slots, head_dim)
    -> last_hidden_state (rows, slots, hidden), float32

A batch without prefix-tuning rows gets one masked cache slot, so the graph always has a cache input. Only the
backbone's weight matrices are quantised (MatMul with a constant operand), per output channel (MiniLM: a third of
per-tensor's logit error, at the same speed); embeddings of positions and token types, layer norms and attention
scores stay float32, as do pooling, poolers and heads, which stay in torch. A decoder also keeps its MLP
down-projections in float32: the activations they read carry Llama-style models' outliers, which one int8 scale per
batch flattens (SmolLM2: logit error a third of quantising them, at 0.8x the speed).

The graph builds its own 4-D additive attention mask from the 2-D one (bidirectional for an encoder, causal over
the input slots for a decoder), the same mask transformers builds for the torch path: transformers' mask helpers
branch on values while tracing, and a traced branch would be frozen into the graph.

The quantised file is cached under the pool's cache folder, keyed by the base's fingerprint and this graph's layout
version, written atomically: a second server, or a restart, loads it instead of exporting again (MiniLM: ~2 s to
export and quantise; SmolLM2: ~15 s).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from prefix_registry.errors import BaseModelError, first_line
from prefix_registry.inference.backbones import Backbone
from prefix_registry.inference.batch import StackedBatch
from prefix_registry.inference.precision import Precision
from prefix_registry.training.base_models import LoadedBase

logger = logging.getLogger(__name__)

# Bump when the graph's inputs, outputs, mask or quantisation change: older cached files are then not read.
INT8_FORMAT = 1
# Decoder weight matrices kept in float32 (by the exported node's module path).
DECODER_FLOAT_MATMULS = ("mlp/down_proj/",)
OPSET = 17
INPUTS = ("inputs_embeds", "attention_mask", "position_ids", "past_keys", "past_values")
OUTPUT = "last_hidden_state"


class CacheShape:
    """The cache layout a base's attention layers read: layers, key/value heads, head width."""

    def __init__(self, config: Any) -> None:
        self.layers = int(config.num_hidden_layers)
        heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)


class _TracedBackbone(torch.nn.Module):
    """The backbone with stacked key/values in and a mask it builds itself: the module that is exported."""

    def __init__(self, backbone: torch.nn.Module, layers: int, is_decoder: bool, takes_token_types: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.layers = layers
        self.is_decoder = is_decoder
        self.takes_token_types = takes_token_types

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_keys: torch.Tensor,
        past_values: torch.Tensor,
    ) -> torch.Tensor:
        cache = DynamicCache([(past_keys[layer], past_values[layer]) for layer in range(self.layers)])
        visible = attention_mask.bool()[:, None, None, :]  # (rows, 1, 1, keys)
        if self.is_decoder:
            # Shapes read from tensors, never as Python numbers, so that the graph keeps them dynamic.
            slot = torch.ones_like(position_ids[0]).cumsum(0)  # 1..slots
            cached = torch.ones_like(past_keys[0, 0, 0, :, 0]).bool()  # one per cache slot
            causal = torch.cat([(slot[:, None] > 0) & cached[None, :], slot[None, :] <= slot[:, None]], dim=1)
            visible = visible & causal[None, None]
        dtype = inputs_embeds.dtype
        bias = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)
        extra = {"token_type_ids": torch.zeros_like(position_ids)} if self.takes_token_types else {}
        outputs = self.backbone(
            inputs_embeds=inputs_embeds,
            attention_mask=bias,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=False,
            **extra,
        )
        return outputs.last_hidden_state


class OnnxRunner:
    """A resident base's backbone as a quantised ONNX Runtime session; float32 states out."""

    precision = Precision.INT8

    def __init__(self, path: Path, shape: CacheShape) -> None:
        import onnxruntime

        self.path = path
        self.shape = shape
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about every unused initializer it prunes
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def states(self, batch: StackedBatch) -> torch.Tensor:
        rows = batch.inputs_embeds.shape[0]
        keys, values, mask = batch.prefix_keys, batch.prefix_values, batch.attention_mask
        if keys is None or values is None:
            # No prefix-tuning row: one cache slot that every row masks.
            shape = self.shape
            keys = torch.zeros(shape.layers, rows, shape.kv_heads, 1, shape.head_dim)
            values = keys
            mask = torch.cat([torch.zeros(rows, 1, dtype=mask.dtype, device=mask.device), mask], dim=1)
        feed = {
            "inputs_embeds": _array(batch.inputs_embeds, np.float32),
            "attention_mask": _array(mask, np.int64),
            "position_ids": _array(batch.position_ids, np.int64),
            "past_keys": _array(keys, np.float32),
            "past_values": _array(values, np.float32),
        }
        (states,) = self.session.run([OUTPUT], feed)
        return torch.from_numpy(states).to(batch.inputs_embeds.device)


def int8_runner(backbone: Backbone, loaded: LoadedBase, cache_dir: Path) -> OnnxRunner:
    """The int8 runner of a base: its cached quantised graph, exported and quantised first when there is none.

    Raises BaseModelError when the backbone cannot be exported or quantised (the error names the base and why).
    """
    shape = CacheShape(backbone.backbone.config)
    path = int8_path(loaded, cache_dir)
    if not path.exists():
        _build(backbone, loaded, shape, path)
    return OnnxRunner(path, shape)


def int8_path(loaded: LoadedBase, cache_dir: Path) -> Path:
    """Where a base's quantised graph is cached: by name (for people) and fingerprint (for identity)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", loaded.ref.name).strip("_")[-40:] or "base"
    return cache_dir / "onnx" / f"{name}-{loaded.fingerprint[:16]}" / f"backbone-int8-f{INT8_FORMAT}.onnx"


def _build(backbone: Backbone, loaded: LoadedBase, shape: CacheShape, path: Path) -> None:
    """Export a copy of the backbone (the resident one is never traced) and quantise it, into `path` atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        exported = staging / "backbone-fp32.onnx"
        traced = _TracedBackbone(
            copy.deepcopy(backbone.backbone), shape.layers, loaded.ref.is_decoder, backbone.takes_token_types
        ).eval()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's warnings name shapes it keeps dynamic by design
                torch.onnx.export(
                    traced,
                    _example_inputs(traced, shape),
                    str(exported),
                    dynamo=False,  # the TorchScript exporter: no onnxscript, and ~1 s for MiniLM
                    opset_version=OPSET,
                    input_names=list(INPUTS),
                    output_names=[OUTPUT],
                    dynamic_axes={
                        "inputs_embeds": {0: "rows", 1: "slots"},
                        "attention_mask": {0: "rows", 1: "keys"},
                        "position_ids": {0: "rows", 1: "slots"},
                        "past_keys": {1: "rows", 3: "cache_slots"},
                        "past_values": {1: "rows", 3: "cache_slots"},
                        OUTPUT: {0: "rows", 1: "slots"},
                    },
                )
            quantised = staging / path.name
            kept = _float_matmuls(exported) if loaded.ref.is_decoder else []
            with _quiet_root_logger():
                quantize_dynamic(
                    exported,
                    quantised,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    # Weight matrices only: attention scores (MatMul of two activations) and embeddings stay float.
                    op_types_to_quantize=["MatMul"],
                    nodes_to_exclude=kept,
                    extra_options={"MatMulConstBOnly": True},
                )
        except Exception as error:
            raise BaseModelError(
                f"cannot build the int8 backbone of {loaded.ref.name!r}: {first_line(error)}"
            ) from error
        os.replace(quantised, path)  # atomic: a reader sees no file or the whole file
        logger.info("int8 backbone of %s cached at %s", loaded.ref.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _float_matmuls(exported: Path) -> list[str]:
    """The decoder's MatMul nodes to keep in float32 (DECODER_FLOAT_MATMULS)."""
    import onnx

    graph = onnx.load(str(exported), load_external_data=False).graph
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and any(part in node.name for part in DECODER_FLOAT_MATMULS)
    ]


def _example_inputs(traced: _TracedBackbone, shape: CacheShape) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with: masked slots in both the cache and the text, so no mask branch is traced as 'none'."""
    rows, slots, cache_slots = 2, 3, 2
    config: Any = traced.backbone.config
    hidden = int(config.hidden_size)
    mask = torch.ones(rows, cache_slots + slots, dtype=torch.long)
    mask[0, 1] = 0
    mask[1, :cache_slots] = 0
    mask[1, -1] = 0
    keys = torch.randn(shape.layers, rows, shape.kv_heads, cache_slots, shape.head_dim)
    return (
        torch.randn(rows, slots, hidden) * 0.02,
        mask,
        torch.arange(slots).repeat(rows, 1),
        keys,
        torch.randn_like(keys),
    )


def _array(tensor: torch.Tensor, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=dtype)


class _quiet_root_logger:
    """ONNX Runtime's quantiser logs a 'consider pre-processing' warning on the root logger each time; hide it."""

    def __enter__(self) -> None:
        self._filter = _DropPreprocessingHint()
        logging.getLogger().addFilter(self._filter)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeFilter(self._filter)


class _DropPreprocessingHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()
