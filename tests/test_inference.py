"""Specification of the forward engine: every method on every kind of base gives what PEFT's own forward gives,
one row at a time or in a batch mixing tasks, methods, virtual-token counts, poolings and heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.classification import classify
from prefix_registry.inference.engine import Row, forward, head_outputs
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.training.adapter_files import save_adapter, verify_adapter_files
from prefix_registry.training.base_models import MINILM, SMOLLM2, load_base_for_classification, resolve_base
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.methods import attach_new_adapter
from prefix_registry.training.trainer import TrainedPrefix

TEXTS = [
    "Fine.",
    "A warm, funny and wise film.",
    "Tedious and far too long, with a plot that goes nowhere and actors who seem to know it.",
    "It was fine, I suppose.",
]
LABELS = ["negative", "positive"]


class PeftReference:
    """A fresh adapter (random start, perturbed) with PEFT's own forward, saved as the project saves adapters."""

    def __init__(self, base_name: str, cache: Path, folder: Path, labels: list[str], **config: object) -> None:
        self.config = TrainConfig(**{"max_length": 32, "seed": 0, **config})  # type: ignore[arg-type]
        base = load_base_for_classification(resolve_base(base_name, cache), labels, seed=0)
        self.model = attach_new_adapter(base, self.config)
        generator = torch.Generator().manual_seed(len(folder.name))
        with torch.no_grad():
            for parameter in self.model.parameters():
                if parameter.requires_grad:  # the prompt, the head, a trained pooler: away from their start
                    parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
        self.model.eval()
        self.tokenizer = base.tokenizer
        trained = TrainedPrefix(model=self.model, base=base, config=self.config, labels=labels)
        self.manifest = save_adapter(trained, folder, data_fingerprint="test")
        self.folder = folder

    @torch.no_grad()
    def logits_alone(self, text: str) -> torch.Tensor:
        """PEFT's logits for one text on its own (no padding)."""
        batch = self.tokenizer([text], truncation=True, max_length=self.config.max_length, return_tensors="pt")
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]

    def attach(self, pool: PrefixPool, task: str) -> AttachedPrefix:
        return pool.attach(task, "1", self.folder, verify_adapter_files(self.folder))


@pytest.fixture(scope="module")
def pool(model_cache: Path) -> PrefixPool:
    return PrefixPool(model_cache)


def _assert_matches_peft(reference: PeftReference, attached: AttachedPrefix) -> None:
    expected = torch.stack([reference.logits_alone(text) for text in TEXTS])
    batched = head_outputs(attached, TEXTS, batch_size=len(TEXTS))  # one padded batch of different lengths
    alone = torch.stack([forward([Row(text, attached)])[0] for text in TEXTS])
    torch.testing.assert_close(batched, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(expected[0], expected[1], atol=1e-3)  # the texts are told apart: a real comparison


@pytest.mark.parametrize("method", ["prefix", "prompt", "ptuning"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_each_method_matches_peft_on_an_encoder_with_either_pooling(
    method: str, pooling: str, pool: PrefixPool, model_cache: Path, tmp_path: Path
) -> None:
    reference = PeftReference(
        MINILM, model_cache, tmp_path / f"{method}-{pooling}", LABELS, method=method, pooling=pooling, virtual_tokens=3
    )
    attached = reference.attach(pool, f"{method}-{pooling}")
    assert attached.pooling.value == pooling and attached.pooler is None
    _assert_matches_peft(reference, attached)


def test_a_trained_pooler_is_read_from_the_adapter(pool: PrefixPool, model_cache: Path, tmp_path: Path) -> None:
    reference = PeftReference(
        MINILM, model_cache, tmp_path / "pooler", LABELS, method="prompt", pooling="cls", train_pooler=True
    )
    attached = reference.attach(pool, "pooler")
    assert attached.pooler is not None
    _assert_matches_peft(reference, attached)


def test_a_batch_mixing_tasks_methods_and_poolings_gives_each_row_what_it_gives_alone(
    pool: PrefixPool, model_cache: Path, tmp_path: Path
) -> None:
    references = {
        "prefix-mean": PeftReference(
            MINILM, model_cache, tmp_path / "a", LABELS, method="prefix", pooling="mean", virtual_tokens=3
        ),
        "prompt-cls": PeftReference(
            MINILM, model_cache, tmp_path / "bb", ["x", "y", "z"], method="prompt", pooling="cls", virtual_tokens=6
        ),
        "ptuning-mean": PeftReference(
            MINILM, model_cache, tmp_path / "ccc", LABELS, method="ptuning", pooling="mean", virtual_tokens=2
        ),
    }
    attached = {task: reference.attach(pool, task) for task, reference in references.items()}
    tasks = list(attached)
    rows = [Row(text, attached[tasks[i % 3]]) for i, text in enumerate(TEXTS * 3)]
    mixed = forward(rows)
    assert [output.shape[0] for output in mixed] == [attached[tasks[i % 3]].output_width for i in range(len(rows))]
    for row, output in zip(rows, mixed, strict=True):
        torch.testing.assert_close(output, forward([row])[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(output, references[row.prefix.task].logits_alone(row.text), atol=1e-5, rtol=0)


def test_classify_is_the_softmax_of_the_head_outputs(pool: PrefixPool, model_cache: Path, tmp_path: Path) -> None:
    reference = PeftReference(MINILM, model_cache, tmp_path / "softmax", LABELS, method="prompt", pooling="mean")
    attached = reference.attach(pool, "softmax")
    predictions = classify(attached, TEXTS, batch_size=3)
    expected = torch.softmax(torch.stack([reference.logits_alone(text) for text in TEXTS]), dim=-1).numpy()
    np.testing.assert_allclose(predictions.probabilities, expected, atol=1e-6)
    assert predictions.labels == LABELS
    assert pool.base_loads == 1  # every prefix of this module shares one resident MiniLM


def test_each_method_matches_peft_on_a_decoder_alone_and_batches_change_nothing_but_rounding(
    model_cache: Path, tmp_path: Path
) -> None:
    pool = PrefixPool(model_cache)
    references = {
        method: PeftReference(
            SMOLLM2, model_cache, tmp_path / method, LABELS, method=method, virtual_tokens=virtual, prefix_init="random"
        )
        for method, virtual in (("prefix", 3), ("prompt", 5), ("ptuning", 2))
    }
    attached = {method: reference.attach(pool, method) for method, reference in references.items()}
    rows = [Row(text, attached[method]) for text in TEXTS for method in attached]
    expected = torch.stack([references[row.prefix.task].logits_alone(row.text) for row in rows])
    alone = torch.stack([forward([row])[0] for row in rows])
    torch.testing.assert_close(alone, expected, atol=1e-5, rtol=0)
    # In float32 a padded batch takes other attention kernels than a row alone, and SmolLM2's large activations
    # carry their rounding to ~5e-5 on logits of ~5; the same batch in float64 shows the batching itself is exact.
    torch.testing.assert_close(torch.stack(forward(rows)), expected, atol=2e-4, rtol=0)
    pool.bases[SMOLLM2].model.double()
    for prefix in attached.values():
        prefix.head.double()
    alone64 = torch.stack([forward([row])[0] for row in rows])
    torch.testing.assert_close(torch.stack(forward(rows)), alone64, atol=1e-6, rtol=0)
    assert pool.base_loads == 1
