"""What the task head reads: mean-pooled states by default (as the linear probe), the [CLS] pooler on request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefix_registry.training.base_models import load_base_encoder, load_base_for_classification, resolve_base
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.features import mean_pooled_embeddings
from prefix_registry.training.methods import attach_new_adapter
from prefix_registry.training.pooling import Pooling, install_pooling, stored_pooling

TEXTS = ["A warm, funny and wise film.", "Tedious.", "It was fine, I suppose, if a little long in the middle act."]


def _pooled(model: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.base_model(**batch)[1]


def test_mean_pooling_feeds_the_head_exactly_the_probes_features() -> None:
    ref = resolve_base("minilm")
    base = load_base_for_classification(ref, ["negative", "positive"])
    switch = install_pooling(base.model, "mean")
    assert switch is not None and switch.mode is Pooling.MEAN
    encoder, tokenizer = load_base_encoder(ref)
    probe_features = mean_pooled_embeddings(encoder, tokenizer, TEXTS, max_length=64, batch_size=8)
    np.testing.assert_allclose(_pooled(base.model, base.tokenizer, TEXTS).numpy(), probe_features, atol=1e-5)

    switch.mode = Pooling.CLS
    cls_pooled = _pooled(base.model, base.tokenizer, TEXTS)
    untouched = load_base_for_classification(ref, ["negative", "positive"])
    np.testing.assert_allclose(cls_pooled.numpy(), _pooled(untouched.model, untouched.tokenizer, TEXTS).numpy())
    assert not np.allclose(cls_pooled.numpy(), probe_features, atol=1e-2)
    assert install_pooling(base.model, "mean") is switch and switch.mode is Pooling.MEAN  # installed once


def test_padding_and_the_prefix_mask_do_not_change_a_texts_mean() -> None:
    base = load_base_for_classification(resolve_base("minilm"), ["negative", "positive"])
    model = attach_new_adapter(base, TrainConfig(virtual_tokens=5)).eval()
    captured: list[torch.Tensor] = []
    head = model.base_model.classifier
    head.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    with torch.no_grad():
        model(**base.tokenizer(TEXTS[:1], return_tensors="pt"))
        model(**base.tokenizer(TEXTS, padding=True, return_tensors="pt"))
    alone, padded = captured[0][0], captured[1][0]  # the short first text, alone and padded beside a long one
    np.testing.assert_allclose(alone.numpy(), padded.numpy(), atol=1e-5)
    assert float(alone.norm()) == pytest.approx(1.0, abs=1e-5)


def test_versions_from_before_the_setting_read_the_cls_pooler() -> None:
    assert stored_pooling({}) is Pooling.CLS
    assert stored_pooling({"pooling": "mean"}) is Pooling.MEAN
    assert TrainConfig().pooling is Pooling.MEAN
    assert TrainConfig.from_stored({}).pooling is Pooling.CLS
    with pytest.raises(Exception, match="train_pooler=True needs pooling='cls'"):
        TrainConfig(train_pooler=True)
    decoder_like = torch.nn.Linear(2, 2)
    assert install_pooling(decoder_like, "mean") is None  # no pooler: the head reads the last token
