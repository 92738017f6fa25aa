"""The forward engine: a batch of rows, each `(text, attached prefix)`, to one head output per row.

Rows may carry different prefixes, methods, virtual-token counts, poolings, heads and precisions. Rows are grouped
by resident base and precision (at int8, by version too: see `_backbone_group`); each group runs its base's
backbone once at that precision for all its rows (batch.py stacks them so that each row sees exactly what it would
alone; precision.py has the runners), then each row is pooled as its prefix says and goes through its own head, in
float32. Nothing on the shared model changes per call.

The output is kind-agnostic: a float tensor of the head's width per row (classification: logits). Turning it into
a prediction belongs to the task kind (classification.py has the softmax).

    outputs = forward([Row("great film", sentiment), Row("too long", length)])   # [tensor(2), tensor(3)]
    table = head_outputs(sentiment, texts, batch_size=32)                        # (len(texts), 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.batch import stack_rows
from prefix_registry.inference.precision import Precision
from prefix_registry.training.evaluation import batch_order


class Row(NamedTuple):
    """One text and the prefix to read it with."""

    text: str
    prefix: AttachedPrefix


@torch.no_grad()
def forward(rows: Sequence[Row]) -> list[torch.Tensor]:
    """Head outputs, one float tensor of its head's width per row, in the order of `rows`."""
    token_ids = _tokenize(rows)
    outputs: dict[int, torch.Tensor] = {}
    for indices in _groups(_backbone_group(row.prefix) for row in rows):
        results = forward_tokens([token_ids[i] for i in indices], [rows[i].prefix for i in indices])
        outputs.update(zip(indices, results, strict=True))
    return [outputs[index] for index in range(len(rows))]


@torch.no_grad()
def forward_tokens(token_ids: Sequence[Sequence[int]], prefixes: Sequence[AttachedPrefix]) -> list[torch.Tensor]:
    """`forward` for rows already tokenised (and truncated), all of whose prefixes share one resident base and one
    precision."""
    if not prefixes:
        return []
    base, precision = prefixes[0].base, prefixes[0].precision
    if any(prefix.base is not base or prefix.precision is not precision for prefix in prefixes):
        raise ValueError("forward_tokens takes rows of one resident base and precision; use forward() to mix them")
    batch = stack_rows(token_ids, prefixes, base.word_embeddings)
    states = base.runner(precision).states(batch)
    outputs: dict[int, torch.Tensor] = {}
    # Rows of one prefix share its pooling, pooler and head: one call of each per prefix in the batch.
    for indices in _groups(id(prefix) for prefix in prefixes):
        prefix = prefixes[indices[0]]
        rows = torch.tensor(indices, device=states.device)
        features = base.backbone.features(states[rows], batch.input_lengths[rows], prefix)
        outputs.update(zip(indices, prefix.head(features).float().cpu(), strict=True))
    return [outputs[index] for index in range(len(prefixes))]


@torch.no_grad()
def head_outputs(
    prefix: AttachedPrefix, texts: Sequence[str], batch_size: int = 32, progress: bool = False
) -> torch.Tensor:
    """`prefix`'s head outputs for `texts`, (len(texts), head width), in batches of similar length."""
    token_ids = _tokenize([Row(text, prefix) for text in texts])
    outputs = torch.zeros(len(texts), prefix.output_width)
    batches = batch_order([len(ids) for ids in token_ids], batch_size)
    for indices in tqdm(batches, desc="predict", disable=not progress, leave=False):
        outputs[indices] = torch.stack(forward_tokens([token_ids[i] for i in indices], [prefix] * len(indices)))
    return outputs


def _backbone_group(prefix: AttachedPrefix) -> tuple[object, ...]:
    """Which rows share one backbone call: those of a base and precision; at int8, of one version only.

    Dynamic int8 quantises each activation matrix with one scale for the whole batch, so at int8 a row's result
    depends on the other rows' activations: a version batched with another whose activations run larger would
    serve worse than its check measured (on batches of its own texts). A SmolLM2 prompt row lost 9% of its logit
    range to int8 in its own batches and 34% beside a prefix-tuning version's rows.
    """
    if prefix.precision is Precision.INT8:
        return (id(prefix.base), prefix.precision, id(prefix))
    return (id(prefix.base), prefix.precision)


def _groups(keys: Iterable[object]) -> list[list[int]]:
    """Positions grouped by key, in order of first appearance."""
    groups: dict[object, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _tokenize(rows: Sequence[Row]) -> list[list[int]]:
    """Token ids per row, truncated to the row's prefix's `max_length` (as in training)."""
    token_ids: list[list[int]] = [[] for _ in rows]
    groups: dict[tuple[int, int], list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault((id(row.prefix.base), row.prefix.max_length), []).append(index)
    for (_, max_length), indices in groups.items():
        tokenizer = rows[indices[0]].prefix.base.tokenizer
        encoded = tokenizer([rows[i].text for i in indices], truncation=True, max_length=max_length)["input_ids"]
        for index, ids in zip(indices, encoded, strict=True):
            token_ids[index] = list(ids)
    return token_ids
