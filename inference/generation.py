"""The generation engine: rows of different generating prefixes decoded together, one backbone call per step.

    rows [Row(text, prefix)]  --prompt_ids-->  each text in its prefix's instruction template (as in training)
    one prefill pass: every row's prompt, right-padded and masked, with its own virtual tokens
        prefix tuning: its key/values in the first cache slots (rows with fewer, or none, mask the rest)
        prompt tuning, P-tuning: its embeddings in front of the prompt's
    then one step per new token for the whole batch, reading and extending the same KV cache
    each row stops at its end-of-turn token or its own `max_new_tokens`; greedy, or sampled with its own seed

Each row gets what PEFT's `generate` gives it alone: the same virtual tokens, the same positions (virtual tokens
0..v-1, the prompt v.., each new token one further), and padding it never attends to. Padding sits after a row's
prompt (new tokens follow the padding, masked out of every row's view), so no query ever has every key masked,
which would put NaNs in the cache that the next steps read.

    outputs = generate_rows([Row("long review...", summary), Row("another", title)])  # token ids per row
    texts = [decode(row.prefix, ids) for row, ids in zip(rows, outputs)]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from prefix_registry.inference.attached import AttachedPrefix, GenerationOptions
from prefix_registry.inference.engine import Row
from prefix_registry.inference.methods import Placement
from prefix_registry.inference.resident import PROMPT_TABLE, ResidentBase, read_adapter
from prefix_registry.kinds.base import TaskKind
from prefix_registry.training.adapter_files import ADAPTER_WEIGHTS, AdapterManifest
from prefix_registry.training.base_models import LoadedBase
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.generation import prompt_text


class ResidentDecoder(ResidentBase):
    """One causal LM (its language-model head included: it is what writes) shared by every generating prefix on it.

    Generation runs through `generate_rows`, not the classification runners: no task head, no pooling, fp32.
    """

    def __init__(self, loaded: LoadedBase, cache_dir: Path | None = None) -> None:
        # Not ResidentBase.__init__: that one looks for a classification head, which a causal LM has not.
        self.loaded = loaded
        self.cache_dir = cache_dir
        self._runners = {}
        self.model = loaded.model
        self.model.eval()
        self.tokenizer = loaded.tokenizer
        self.head_name = "lm_head"
        self.template_head = torch.nn.Identity()
        self.word_embeddings = self.model.get_input_embeddings()
        self.decoder: Any = self.model.base_model  # the transformer without its language-model head
        self.lm_head: torch.nn.Module = self.model.get_output_embeddings()


def attach_generator(
    base: ResidentDecoder, task: str, version: str, adapter_dir: Path, manifest: AdapterManifest, kind: TaskKind
) -> AttachedPrefix:
    """The runnable form of a verified generating adapter (PEFT's files) on `base`, with the instruction and default
    decoding (greedy, the version's `max_new_tokens`) it was trained and scored with.

    Raises AdapterError when the adapter was trained on another base, is of an unsupported method or lacks its table.
    """
    started = time.perf_counter()
    peft_type, weights, shape = read_adapter(base, task, version, adapter_dir, manifest)
    trained = TrainConfig.from_stored(manifest.train_config)
    return AttachedPrefix(
        task=task,
        version=version,
        peft_type=peft_type,
        labels=[],
        max_length=manifest.max_length,
        virtual_tokens=weights[PROMPT_TABLE].float(),
        head=torch.nn.Identity(),
        base=base,
        prefix_shape=shape,
        kind=kind,
        adapter_bytes=(adapter_dir / ADAPTER_WEIGHTS).stat().st_size,
        load_seconds=time.perf_counter() - started,
        instruction=trained.instruction,
        generation=GenerationOptions(max_new_tokens=trained.max_new_tokens),
    )


def prompt_ids(prefix: AttachedPrefix, text: str) -> list[int]:
    """The token ids `prefix` reads before it writes: `text` cut to its `max_length` tokens, in its instruction
    template (training/generation.py's `prompt_text`, as training and evaluation read it)."""
    tokenizer = prefix.base.tokenizer
    ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=prefix.max_length)["input_ids"]
    prompt = prompt_text(tokenizer, prefix.instruction or "", tokenizer.decode(ids))
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def decode(prefix: AttachedPrefix, token_ids: torch.Tensor) -> str:
    """A row's new tokens as text: special tokens dropped, stripped (as evaluation decodes them)."""
    return str(prefix.base.tokenizer.decode(token_ids.tolist(), skip_special_tokens=True)).strip()


def truncated(prefix: AttachedPrefix, token_ids: torch.Tensor) -> bool:
    """Whether a row stopped at its token budget rather than at its end-of-turn token (which is never returned)."""
    options = _options(prefix)
    return int(token_ids.numel()) >= options.max_new_tokens


@torch.no_grad()
def generate_rows(rows: Sequence[Row]) -> list[torch.Tensor]:
    """The new token ids of each row (end-of-turn token excluded), in the order of `rows`; rows on one resident
    decoder share every backbone call, whatever their prefixes, methods and decoding options."""
    for row in rows:
        if row.prefix.instruction is None or not isinstance(row.prefix.base, ResidentDecoder):
            raise ValueError(f"{row.prefix.task} v{row.prefix.version} does not generate: its kind has no text output")
    outputs: dict[int, torch.Tensor] = {}
    groups: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(id(row.prefix.base), []).append(index)
    for indices in groups.values():
        prefixes = [rows[i].prefix for i in indices]
        ids = [prompt_ids(rows[i].prefix, rows[i].text) for i in indices]
        outputs.update(zip(indices, _generate(ids, prefixes), strict=True))
    return [outputs[index] for index in range(len(rows))]


@dataclass
class _Prefill:
    inputs_embeds: torch.Tensor  # (rows, slots, hidden)
    attention_mask: torch.Tensor  # (rows, cache slots + slots)
    position_ids: torch.Tensor  # (rows, slots)
    cache: DynamicCache
    lengths: torch.Tensor  # (rows,) real input slots (prompt embeddings + prompt tokens)
    next_positions: torch.Tensor  # (rows,) the position of each row's first new token


def _prefill(token_ids: Sequence[Sequence[int]], prefixes: Sequence[AttachedPrefix], base: ResidentDecoder) -> _Prefill:
    size = len(token_ids)
    in_cache = [prefix.strategy.placement is Placement.CACHE for prefix in prefixes]
    prompts = [0 if cached else p.num_virtual_tokens for cached, p in zip(in_cache, prefixes, strict=True)]
    cache_slots = max((p.num_virtual_tokens for c, p in zip(in_cache, prefixes, strict=True) if c), default=0)
    lengths = [prompt + len(ids) for prompt, ids in zip(prompts, token_ids, strict=True)]
    slots = max(lengths)
    device = base.device
    longest = max(len(ids) for ids in token_ids)
    padded = torch.zeros(size, longest, dtype=torch.long, device=device)
    for row, ids in enumerate(token_ids):
        padded[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    text_embeddings = base.word_embeddings(padded)
    dtype = text_embeddings.dtype
    inputs_embeds = torch.zeros(size, slots, text_embeddings.shape[-1], dtype=dtype, device=device)
    attention_mask = torch.zeros(size, cache_slots + slots, dtype=torch.long, device=device)
    position_ids = torch.zeros(size, slots, dtype=torch.long, device=device)
    next_positions = torch.zeros(size, dtype=torch.long, device=device)
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    for row, (ids, prefix, cached) in enumerate(zip(token_ids, prefixes, in_cache, strict=True)):
        n_virtual, n_text, prompt = prefix.num_virtual_tokens, len(ids), prompts[row]
        inputs_embeds[row, prompt : prompt + n_text] = text_embeddings[row, :n_text]
        offset = n_virtual if cached else 0  # PEFT's positions: the cache's length, or the prompt in front
        if cached:
            row_keys, row_values = prefix.strategy.key_values(prefix.virtual_tokens, prefix.prefix_shape)
            if keys is None or values is None:
                layers, heads, _, head_dim = row_keys.shape
                keys = torch.zeros(layers, size, heads, cache_slots, head_dim, dtype=dtype, device=device)
                values = torch.zeros_like(keys)
            keys[:, row, :, :n_virtual] = row_keys
            values[:, row, :, :n_virtual] = row_values
            attention_mask[row, :n_virtual] = 1
        else:
            inputs_embeds[row, :prompt] = prefix.strategy.embeddings(prefix.virtual_tokens).to(dtype)
        position_ids[row, : lengths[row]] = torch.arange(offset, offset + lengths[row])
        next_positions[row] = offset + lengths[row]
        attention_mask[row, cache_slots : cache_slots + lengths[row]] = 1
    if keys is not None and values is not None:
        cache = DynamicCache([(keys[layer], values[layer]) for layer in range(keys.shape[0])])
    else:
        cache = DynamicCache()
    return _Prefill(
        inputs_embeds,
        attention_mask,
        position_ids,
        cache,
        torch.tensor(lengths, dtype=torch.long, device=device),
        next_positions,
    )


def _options(prefix: AttachedPrefix) -> GenerationOptions:
    if prefix.generation is None:
        raise ValueError(f"{prefix.task} v{prefix.version} has no decoding options: it does not generate")
    return prefix.generation


def _generate(token_ids: Sequence[Sequence[int]], prefixes: Sequence[AttachedPrefix]) -> list[torch.Tensor]:
    base = prefixes[0].base
    if not isinstance(base, ResidentDecoder):
        raise ValueError(f"{prefixes[0].task}: rows to generate need a resident decoder")
    options = [_options(prefix) for prefix in prefixes]
    eos = base.tokenizer.eos_token_id
    size = len(prefixes)
    generators = [
        torch.Generator().manual_seed(option.seed) if option.do_sample and option.seed is not None else None
        for option in options
    ]
    batch = _prefill(token_ids, prefixes, base)
    states = base.decoder(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        past_key_values=batch.cache,
        use_cache=True,
    ).last_hidden_state
    rows = torch.arange(size, device=states.device)
    logits = base.lm_head(states[rows, batch.lengths - 1]).float()
    attention_mask, positions = batch.attention_mask, batch.next_positions
    written: list[list[int]] = [[] for _ in range(size)]
    done = [False] * size
    for _ in range(max(option.max_new_tokens for option in options)):
        chosen = [_choose(logits[row], options[row], generators[row]) for row in range(size)]
        for row, token in enumerate(chosen):
            if done[row]:
                continue
            if token == eos:
                done[row] = True
                continue
            written[row].append(token)
            done[row] = len(written[row]) >= options[row].max_new_tokens
        if all(done):
            break
        attention_mask = torch.cat([attention_mask, torch.ones(size, 1, dtype=attention_mask.dtype)], dim=1)
        states = base.decoder(
            input_ids=torch.tensor(chosen, dtype=torch.long).unsqueeze(1),
            attention_mask=attention_mask,
            position_ids=positions.unsqueeze(1),
            past_key_values=batch.cache,
            use_cache=True,
        ).last_hidden_state
        positions = positions + 1
        logits = base.lm_head(states[:, -1]).float()
    return [torch.tensor(tokens, dtype=torch.long) for tokens in written]


def _choose(logits: torch.Tensor, options: GenerationOptions, generator: torch.Generator | None) -> int:
    """Greedy: the likeliest token; sampling: a draw from the softmax (from the row's own seeded generator)."""
    if not options.do_sample:
        return int(torch.argmax(logits).item())
    probabilities = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator).item())
