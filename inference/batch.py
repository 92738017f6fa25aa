"""Row-wise batch assembly: rows with different prefixes, methods and virtual-token counts in one backbone input.

Each row keeps exactly what PEFT gives it when it runs alone; only padding is added, and masked:

    cache slots   [row's prefix key/values | masked padding]            (prefix-tuning rows; others: all masked)
    input slots   [row's prompt embeddings | text embeddings | padding]  (prompt rows; prefix rows: text | padding)

Real input slots are left-aligned in every row, so a causal decoder never sees a query whose keys are all masked
(padding comes after a row's last real token), and an encoder's first slot is the row's first real input. Each
row gets explicit `position_ids`: virtual tokens 0..v-1 and text tokens v..v+T-1, whichever way the virtual tokens
enter, which is what PEFT's forward gives a row alone (prefix tuning: the cache length offsets the text's positions;
prompt methods: the prompt occupies the first positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

from prefix_registry.inference.methods import Placement

if TYPE_CHECKING:
    from prefix_registry.inference.attached import AttachedPrefix


@dataclass(frozen=True)
class StackedBatch:
    """The backbone's input for a row-wise batch.

    Attributes:
        inputs_embeds: (rows, input slots, hidden).
        attention_mask: (rows, cache slots + input slots), 1 where a row has a real key.
        position_ids: (rows, input slots).
        cache: prefix key/values, each layer (rows, heads, cache slots, head_dim); None when no row has a prefix.
        input_lengths: (rows,) how many input slots each row really uses (prompt + text).
        prefix_keys, prefix_values: the same key/values stacked, (layers, rows, heads, cache slots, head_dim), for
            a backbone that takes them as one tensor each (the int8 ONNX graph); None when `cache` is.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    cache: DynamicCache | None
    input_lengths: torch.Tensor
    prefix_keys: torch.Tensor | None = None
    prefix_values: torch.Tensor | None = None


def stack_rows(
    token_ids: Sequence[Sequence[int]], prefixes: Sequence[AttachedPrefix], word_embeddings: torch.nn.Module
) -> StackedBatch:
    """Stack rows (a text's token ids and its prefix, all on one base) into one backbone input.

    Raises ValueError for a row with nothing to read (no text token and no prompt).
    """
    if len(token_ids) != len(prefixes):
        raise ValueError(f"expected one prefix per row, got {len(prefixes)} for {len(token_ids)} rows")
    size = len(token_ids)
    strategies = [prefix.strategy for prefix in prefixes]
    in_cache = [strategy.placement is Placement.CACHE for strategy in strategies]
    prompt_counts = [
        0 if cached else prefix.num_virtual_tokens for cached, prefix in zip(in_cache, prefixes, strict=True)
    ]
    cache_slots = max((p.num_virtual_tokens for cached, p in zip(in_cache, prefixes, strict=True) if cached), default=0)
    lengths = [prompt + len(ids) for prompt, ids in zip(prompt_counts, token_ids, strict=True)]
    if min(lengths, default=1) == 0:
        raise ValueError("a text with no tokens cannot be read by a prefix that adds none to the input")
    slots = max(lengths, default=0)

    device = next(word_embeddings.parameters()).device  # the batch is built where the base lives
    longest_text = max((len(ids) for ids in token_ids), default=0)
    padded_ids = torch.zeros(size, longest_text, dtype=torch.long, device=device)
    for row, ids in enumerate(token_ids):
        padded_ids[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    text_embeddings = word_embeddings(padded_ids)
    dtype = text_embeddings.dtype

    inputs_embeds = torch.zeros(size, slots, text_embeddings.shape[-1], dtype=dtype, device=device)
    attention_mask = torch.zeros(size, cache_slots + slots, dtype=torch.long, device=device)
    position_ids = torch.zeros(size, slots, dtype=torch.long, device=device)
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    for row, (ids, prefix, strategy, cached) in enumerate(zip(token_ids, prefixes, strategies, in_cache, strict=True)):
        n_virtual, n_text, prompt = prefix.num_virtual_tokens, len(ids), prompt_counts[row]
        inputs_embeds[row, prompt : prompt + n_text] = text_embeddings[row, :n_text]
        if cached:
            row_keys, row_values = strategy.key_values(prefix.virtual_tokens, prefix.prefix_shape)
            if keys is None or values is None:
                layers, heads, _, head_dim = row_keys.shape
                keys = torch.zeros(layers, size, heads, cache_slots, head_dim, dtype=dtype, device=device)
                values = torch.zeros_like(keys)
            keys[:, row, :, :n_virtual] = row_keys
            values[:, row, :, :n_virtual] = row_values
            attention_mask[row, :n_virtual] = 1
            position_ids[row, :n_text] = torch.arange(n_virtual, n_virtual + n_text)
        else:
            inputs_embeds[row, :prompt] = strategy.embeddings(prefix.virtual_tokens).to(dtype)
            position_ids[row, : prompt + n_text] = torch.arange(prompt + n_text)
        attention_mask[row, cache_slots : cache_slots + lengths[row]] = 1
    cache = None
    if keys is not None and values is not None:
        cache = DynamicCache([(keys[layer], values[layer]) for layer in range(keys.shape[0])])
    return StackedBatch(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        input_lengths=torch.tensor(lengths, dtype=torch.long, device=device),
        prefix_keys=keys,
        prefix_values=values,
    )
