"""Cheap dropout masks: the same Bernoulli masks and the same model outside training, for less CPU time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prefix_registry.training.base_models import load_base_for_classification, resolve_base
from prefix_registry.training.cheap_dropout import (
    CHEAP_ATTENTION,
    NO_ATTENTION_DROPOUT,
    CheapDropout,
    cheap_dropout_attention,
    drop,
    drop_mask,
    training_dropout,
)
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.methods import attach_new_adapter


@pytest.mark.parametrize("p", [0.1, 0.5, 0.02])
def test_masks_drop_each_element_with_probability_p_independently(p: float) -> None:
    torch.manual_seed(0)
    mask = drop_mask((1000, 1000), p)
    assert mask.dtype == torch.bool and mask.shape == (1000, 1000)
    assert abs(mask.float().mean().item() - p) < 0.002
    # Neighbours come from the same 64-bit word; they must still be independent (no shared bits between lanes).
    both = (mask[:, 0::2] & mask[:, 1::2]).float().mean().item()
    assert abs(both - p * p) < 0.002
    # Rows differ: the lanes are not a repeated pattern.
    assert not torch.equal(mask[0], mask[1])


def test_masks_follow_the_torch_seed() -> None:
    torch.manual_seed(7)
    first = drop_mask((64, 33), 0.1)
    torch.manual_seed(7)
    again = drop_mask((64, 33), 0.1)
    other = drop_mask((64, 33), 0.1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_probability_outside_0_to_1_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\), got 1.0"):
        drop_mask((4,), 1.0)


def test_dropout_zeroes_about_p_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    ones = torch.ones(2000, 500)
    dropped = drop(ones, 0.1)
    assert abs((dropped == 0).float().mean().item() - 0.1) < 0.003
    assert torch.unique(dropped).tolist() == [0.0, pytest.approx(1 / 0.9)]
    assert abs(dropped.mean().item() - 1.0) < 0.005


def test_gradients_flow_only_through_kept_elements() -> None:
    torch.manual_seed(0)
    x = torch.randn(50, 40, requires_grad=True)
    out = CheapDropout(0.3).train()(x)
    out.sum().backward()
    assert x.grad is not None
    kept = out != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.7))
    assert torch.count_nonzero(x.grad[~kept]) == 0


def test_evaluation_mode_is_the_identity() -> None:
    x = torch.randn(8, 16)
    assert torch.equal(CheapDropout(0.5).eval()(x), x)


class _Attention(nn.Module):
    def __init__(self, training: bool) -> None:
        super().__init__()
        self.train(training)
        self.is_causal = False


def test_attention_without_dropout_matches_sdpa_and_its_dropout_averages_out() -> None:
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 3, 5, 8) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, :, :, 3:] = False  # the second text is padded after 3 tokens
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask).transpose(1, 2)
    evaluated, _ = cheap_dropout_attention(_Attention(training=False), query, key, value, mask, dropout=0.3)
    assert torch.allclose(evaluated, expected, atol=1e-5)
    draws = [
        cheap_dropout_attention(_Attention(training=True), query, key, value, mask, dropout=0.3)[0] for _ in range(3000)
    ]
    assert not torch.allclose(draws[0], expected, atol=1e-3)  # dropout really applies while training
    assert torch.allclose(torch.stack(draws).mean(dim=0), expected, atol=0.05)  # inverted dropout: unbiased
    # Padding stays masked under dropout: changing a padded value changes nothing.
    changed = value.clone()
    changed[1, :, 3:] = 100.0
    torch.manual_seed(1)
    before, _ = cheap_dropout_attention(_Attention(training=True), query, key, value, mask, dropout=0.3)
    torch.manual_seed(1)
    after, _ = cheap_dropout_attention(_Attention(training=True), query, key, changed, mask, dropout=0.3)
    assert torch.allclose(before[1], after[1])


@pytest.fixture(scope="module")
def prefix_model(model_cache) -> nn.Module:  # type: ignore[no-untyped-def]
    base = load_base_for_classification(resolve_base("minilm", model_cache), ["negative", "positive"], seed=0)
    return attach_new_adapter(base, TrainConfig())


def test_the_swap_lasts_for_the_block_only_even_when_it_fails(prefix_model: nn.Module) -> None:
    originals = [m for m in prefix_model.modules() if type(m) is nn.Dropout and m.p > 0]
    assert originals
    with (
        pytest.raises(RuntimeError, match="boom"),
        training_dropout(prefix_model, cheap_masks=True, attention_dropout=True),
    ):
        assert prefix_model.config._attn_implementation == CHEAP_ATTENTION
        assert not any(type(m) is nn.Dropout and m.p > 0 for m in prefix_model.modules())
        assert sum(isinstance(m, CheapDropout) for m in prefix_model.modules()) == len(originals)
        raise RuntimeError("boom")
    assert prefix_model.config._attn_implementation == "sdpa"
    assert not any(isinstance(m, CheapDropout) for m in prefix_model.modules())
    assert [m for m in prefix_model.modules() if type(m) is nn.Dropout and m.p > 0] == originals


def test_inside_the_block_training_drops_and_evaluation_is_unchanged(prefix_model: nn.Module, model_cache) -> None:  # type: ignore[no-untyped-def]
    tokenizer = load_base_for_classification(resolve_base("minilm", model_cache), ["a", "b"]).tokenizer
    batch = tokenizer(["a fine film", "dull and far too long, with nothing to say"], padding=True, return_tensors="pt")
    prefix_model.eval()
    with torch.no_grad():
        before = prefix_model(**batch).logits
    with training_dropout(prefix_model, cheap_masks=True, attention_dropout=True):
        prefix_model.eval()
        with torch.no_grad():
            inside_eval = prefix_model(**batch).logits
        prefix_model.train()
        torch.manual_seed(0)
        logits = prefix_model(**batch).logits
        torch.manual_seed(1)
        other = prefix_model(**batch).logits
        logits.sum().backward()
    prefix_model.eval()
    assert torch.allclose(inside_eval, before, atol=1e-5)
    assert not torch.allclose(logits, other)  # masks are drawn while training
    prompt_grads = [p.grad for n, p in prefix_model.named_parameters() if p.requires_grad and "prompt_encoder" in n]
    assert prompt_grads and all(g is not None and torch.count_nonzero(g) > 0 for g in prompt_grads)
    prefix_model.zero_grad(set_to_none=True)


def _attention_probability_dropouts(model: nn.Module) -> list[nn.Module]:
    return [m for n, m in model.named_modules() if n.endswith("attention.self")]


def test_without_attention_dropout_only_the_hidden_dropouts_draw_masks(prefix_model: nn.Module, model_cache) -> None:  # type: ignore[no-untyped-def]
    """Attention dropout off: same logits whatever the seed once the hidden dropouts are set to 0 as well."""
    tokenizer = load_base_for_classification(resolve_base("minilm", model_cache), ["a", "b"]).tokenizer
    batch = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    prefix_model.eval()
    with torch.no_grad():
        evaluated = prefix_model(**batch).logits
    attention_modules = _attention_probability_dropouts(prefix_model)
    assert attention_modules and all(m.dropout.p > 0 for m in attention_modules)  # the base has attention dropout
    hidden = [
        m
        for m in prefix_model.modules()
        if type(m) is nn.Dropout and m.p > 0 and not any(m is a.dropout for a in attention_modules)
    ]
    saved = [m.p for m in hidden]
    try:
        for module in hidden:
            module.p = 0.0
        with training_dropout(prefix_model, cheap_masks=True, attention_dropout=False), torch.no_grad():
            assert prefix_model.config._attn_implementation == NO_ATTENTION_DROPOUT
            prefix_model.train()
            torch.manual_seed(0)
            first = prefix_model(**batch).logits
            torch.manual_seed(1)
            second = prefix_model(**batch).logits
        with training_dropout(prefix_model, cheap_masks=True, attention_dropout=True), torch.no_grad():
            torch.manual_seed(0)
            with_attention_dropout = prefix_model(**batch).logits
    finally:
        for module, p in zip(hidden, saved, strict=True):
            module.p = p
        prefix_model.eval()
    assert torch.allclose(first, second) and torch.allclose(first, evaluated, atol=1e-5)
    assert not torch.allclose(with_attention_dropout, evaluated, atol=1e-3)
    assert prefix_model.config._attn_implementation == "sdpa"
