"""Specification of training: what learns, what stays frozen, and what an adapter file holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel

from prefix_registry.errors import AdapterError
from prefix_registry.kinds.classification_metrics import classification_metrics
from prefix_registry.kinds.imbalance import loss_weights
from prefix_registry.training.adapter_files import (
    ADAPTER_WEIGHTS,
    AdapterManifest,
    check_base_matches,
    load_checkpoint,
    save_adapter,
    save_checkpoint,
    verify_adapter_files,
)
from prefix_registry.training.base_models import fingerprint_backbone, load_base_for_classification, resolve_base
from prefix_registry.training.config import ClassWeighting, TrainConfig
from prefix_registry.training.data import LabelledTexts
from prefix_registry.training.evaluation import predict_probabilities
from prefix_registry.training.methods import _first_tokens, attach_new_adapter, init_prefix_from_tokens
from prefix_registry.training.pooling import install_pooling
from prefix_registry.training.splits import split_labelled_texts
from prefix_registry.training.trainer import load_trainable_state, train_prefix
from tests.conftest import tiny_config, tiny_data


def _train(model_cache: Path, **changes):
    config = tiny_config(**changes)
    data = tiny_data()
    splits = split_labelled_texts(data, config.validation_fraction, config.test_fraction, config.seed)
    base = load_base_for_classification(resolve_base(config.base, model_cache), splits.labels, seed=config.seed)
    fingerprint_before = base.fingerprint
    initial = {n: p.detach().clone() for n, p in base.model.named_parameters()}
    trained = train_prefix(base, splits, config, progress=False)
    return trained, splits, fingerprint_before, initial, data


@pytest.mark.parametrize("method", ["prefix", "prompt", "ptuning"])
def test_each_method_trains_only_adapter_and_head_on_minilm(model_cache: Path, tmp_path: Path, method: str) -> None:
    trained, splits, fingerprint_before, initial, data = _train(model_cache, method=method)
    trainable = [name for name, p in trained.model.named_parameters() if p.requires_grad]
    assert trainable and all("prompt_encoder" in n or "modules_to_save" in n for n in trainable)
    assert trained.trainable_params < 0.01 * trained.total_params
    # The frozen base is bit-for-bit what was loaded.
    assert fingerprint_backbone(trained.model.get_base_model()) == fingerprint_before
    for name, param in trained.model.get_base_model().named_parameters():
        if "modules_to_save" not in name and "original_module" not in name and name in initial:
            assert torch.equal(param, initial[name]), name
    # ...while the adapter moved away from its start.
    state = trained.trainable_state()
    assert any(not torch.equal(t, torch.zeros_like(t)) for t in state.values())
    # Evaluations: every half epoch (4 of 8 steps) and at the step limit; the random start is not evaluated.
    assert trained.steps == 6 and [report.step for report in trained.history] == [4, 6]

    folder = tmp_path / "adapter"
    manifest = save_adapter(trained, folder, data_fingerprint=data.fingerprint)
    assert {p.name for p in folder.iterdir()} >= {
        "adapter_config.json",
        ADAPTER_WEIGHTS,
        "labels.json",
        "manifest.json",
    }
    assert manifest.method == method and manifest.labels == ["negative", "positive"]
    assert verify_adapter_files(folder).adapter_sha256 == manifest.adapter_sha256

    # The files alone reproduce the predictions: PEFT's own loader on a fresh base pooled as the manifest says (as
    # an exported adapter is read). Loading a registered version: tests/test_loading.py.
    texts = splits.test["text"].tolist()
    expected = trained.predict(texts).probabilities
    reloaded, tokenizer = _plain_peft_reload(trained.base.ref, folder, manifest)
    actual = predict_probabilities(lambda b: reloaded(**b).logits, tokenizer, texts, manifest.labels, 32)
    np.testing.assert_allclose(actual.probabilities, expected, atol=1e-6)


def _plain_peft_reload(ref, folder: Path, manifest: AdapterManifest):
    """The adapter in `folder` on a fresh copy of its base through PEFT's loader, and the base's tokenizer."""
    fresh = load_base_for_classification(ref, manifest.labels)
    install_pooling(fresh.model, manifest.train_config["pooling"])
    return PeftModel.from_pretrained(fresh.model, str(folder)).eval(), fresh.tokenizer


def test_prompt_tuning_from_text_starts_at_that_texts_embeddings(model_cache: Path) -> None:
    config = tiny_config(method="prompt", prompt_init="text", init_text="great awful movie review", virtual_tokens=4)
    base = load_base_for_classification(resolve_base("minilm", model_cache), ["negative", "positive"])
    model = attach_new_adapter(base, config)
    ids = base.tokenizer("great awful movie review")["input_ids"]  # PEFT keeps the special tokens
    word_embeddings = model.get_base_model().get_input_embeddings().weight
    start = model.prompt_encoder["default"].embedding.weight
    torch.testing.assert_close(start, word_embeddings[ids][:4])


def test_warm_start_reproduces_the_parent_and_refuses_another_shape(model_cache: Path, tmp_path: Path) -> None:
    trained, splits, *_ = _train(model_cache)
    save_checkpoint(trained, tmp_path)
    state = load_checkpoint(tmp_path)
    texts = splits.test["text"].tolist()
    base = load_base_for_classification(trained.base.ref, trained.labels)
    model = attach_new_adapter(base, trained.config)
    load_trainable_state(model, state)
    model.eval()
    again = predict_probabilities(lambda b: model(**b).logits, base.tokenizer, texts, trained.labels, 32)
    np.testing.assert_allclose(again.probabilities, trained.predict(texts).probabilities, atol=1e-6)

    other = load_base_for_classification(trained.base.ref, trained.labels)
    wider = attach_new_adapter(other, tiny_config(virtual_tokens=8))
    with pytest.raises(AdapterError, match="has shape"):
        load_trainable_state(wider, state)


def test_training_stops_early_when_validation_stops_improving(model_cache: Path) -> None:
    trained, *_ = _train(
        model_cache,
        max_steps=None,
        epochs=6,
        patience=1,
        learning_rate=1e-12,
        head_learning_rate=1e-12,
        head_init="probe",
        refit_head=False,
    )
    assert trained.stopped_early and trained.stop_reason == "no validation gain in 1 evaluations"
    assert len(trained.history) == 2 and trained.best_evaluation == 0 and trained.best_epoch == 0.0


def test_the_trainer_returns_the_best_state_by_validation_not_the_last(model_cache: Path) -> None:
    # Steps far too large wreck the probe-initialised start; the start must win and be what comes back.
    trained, splits, *_ = _train(
        model_cache, learning_rate=50.0, head_learning_rate=50.0, patience=5, head_init="probe", refit_head=False
    )
    scores = [report.validation["macro_f1"] for report in trained.history]
    assert trained.best_evaluation == int(np.argmax(scores))
    assert max(scores) > scores[-1]  # the last state is worse: returning it would fail the next line
    again = classification_metrics(
        splits.validation["label"].tolist(),
        trained.predict(splits.validation["text"].tolist()).predicted,
        trained.labels,
    )
    assert again["macro_f1"] == pytest.approx(max(scores))


def test_the_head_starts_as_the_linear_probe_of_its_own_features(model_cache: Path) -> None:
    trained, *_ = _train(model_cache, max_steps=1, head_init="probe")
    assert trained.head_probe is not None
    # Evaluation 0 is the untrained prompt with the fitted head: exactly the probe's validation score.
    assert trained.history[0].validation["macro_f1"] == pytest.approx(trained.head_probe["validation_macro_f1"])
    random_head, *_ = _train(model_cache, max_steps=1, head_init="random")
    assert random_head.head_probe is None


def test_the_head_is_refitted_on_the_trained_features_only_when_validation_says_so(model_cache: Path) -> None:
    # Steps too small to move anything: the refit sees the start's features, and a probe beats a random head.
    random_start, splits, *_ = _train(model_cache, learning_rate=1e-12, head_learning_rate=1e-12, head_init="random")
    refit = random_start.head_refit
    assert refit is not None and refit["kept"] is True
    assert refit["validation_macro_f1"] > refit["trained_head_validation_macro_f1"]
    again = classification_metrics(
        splits.validation["label"].tolist(),
        random_start.predict(splits.validation["text"].tolist()).predicted,
        random_start.labels,
    )
    assert again["macro_f1"] == pytest.approx(refit["validation_macro_f1"])
    assert random_start.best_validation["macro_f1"] == pytest.approx(refit["validation_macro_f1"])
    # A head that already is that probe gains nothing from a refit: the trained head stays.
    probe_start, *_ = _train(model_cache, learning_rate=1e-12, head_learning_rate=1e-12, head_init="probe")
    assert probe_start.head_refit is not None and probe_start.head_refit["kept"] is False
    assert not _train(model_cache, max_steps=1, refit_head=False)[0].head_refit


def test_class_weights_are_used_for_imbalanced_data(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = tiny_data(limit=400).frame
    skewed = pd.concat([frame[frame["label"] == "negative"].head(120), frame[frame["label"] == "positive"].head(30)])
    data = LabelledTexts(skewed.reset_index(drop=True), "skewed")
    config = tiny_config(max_steps=2)
    splits = split_labelled_texts(data, config.validation_fraction, config.test_fraction, config.seed)
    seen: list[torch.Tensor | None] = []
    real_cross_entropy = torch.nn.functional.cross_entropy

    def recording_cross_entropy(logits, targets, weight=None, **kwargs):
        seen.append(weight)
        return real_cross_entropy(logits, targets, weight=weight, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", recording_cross_entropy)
    base = load_base_for_classification(resolve_base(config.base, model_cache), splits.labels, seed=config.seed)
    trained = train_prefix(base, splits, config, progress=False)
    # 96 negative and 24 positive training texts: the minority class weighs 4 times more.
    assert trained.class_weights == pytest.approx([0.625, 2.5])
    assert len(seen) == 2 and all(w is not None and w.tolist() == pytest.approx([0.625, 2.5]) for w in seen)


def test_balanced_data_trains_unweighted_and_auto_weights_follow_the_skew() -> None:
    balanced = np.array([0] * 50 + [1] * 50)
    skewed = np.array([0] * 65 + [1] * 21 + [2] * 14)
    assert loss_weights(balanced, 2, ClassWeighting.AUTO) is None
    assert loss_weights(skewed, 3, ClassWeighting.NONE) is None
    weights = loss_weights(skewed, 3, ClassWeighting.AUTO)
    assert weights is not None and weights.tolist() == pytest.approx([100 / 195, 100 / 63, 100 / 42])


def test_configs_stored_before_pooler_training_keep_their_shapes() -> None:
    stored = tiny_config().to_dict()
    for key in ("train_pooler", "prefix_projection", "head_init", "class_weighting", "pooling"):
        stored.pop(key)
    old = TrainConfig.from_stored(stored)
    assert old.train_pooler is False and old.prefix_projection is False and old.pooling == "cls"
    assert TrainConfig.from_stored(stored | {"train_pooler": True}).train_pooler is True  # with the cls pooling


def test_a_trained_pooler_travels_in_a_plain_peft_export(model_cache: Path, tmp_path: Path) -> None:
    trained, splits, _, _, data = _train(model_cache, max_steps=2, train_pooler=True, pooling="cls")
    trained_pooler = [n for n, p in trained.model.named_parameters() if p.requires_grad and "pooler" in n]
    assert trained_pooler and all("modules_to_save" in n for n in trained_pooler)
    folder = tmp_path / "adapter"
    manifest = save_adapter(trained, folder, data_fingerprint=data.fingerprint)
    texts = splits.test["text"].tolist()
    fresh = load_base_for_classification(trained.base.ref, manifest.labels)
    reloaded = PeftModel.from_pretrained(fresh.model, str(folder)).eval()
    actual = predict_probabilities(lambda b: reloaded(**b).logits, fresh.tokenizer, texts, manifest.labels, 32)
    np.testing.assert_allclose(actual.probabilities, trained.predict(texts).probabilities, atol=1e-6)


def test_corrupted_or_missing_adapter_files_are_refused(model_cache: Path, tmp_path: Path) -> None:
    trained, _, _, _, data = _train(model_cache)
    folder = tmp_path / "adapter"
    save_adapter(trained, folder, data_fingerprint=data.fingerprint)
    weights = folder / ADAPTER_WEIGHTS
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"\x00" * 8)
    with pytest.raises(AdapterError, match=r"adapter file adapter_model.safetensors is corrupted"):
        verify_adapter_files(folder)
    weights.write_bytes(original)
    with pytest.raises(AdapterError, match="does not match the registry's"):
        verify_adapter_files(folder, expected_sha256="0" * 64)
    (folder / "labels.json").unlink()
    with pytest.raises(AdapterError, match=r"labels\.json is missing"):
        verify_adapter_files(folder)


def test_adapter_refuses_a_base_with_other_weights(model_cache: Path, tmp_path: Path) -> None:
    trained, _, _, _, data = _train(model_cache)
    folder = tmp_path / "adapter"
    manifest = save_adapter(trained, folder, data_fingerprint=data.fingerprint)
    other = load_base_for_classification(trained.base.ref, manifest.labels)
    with torch.no_grad():
        other.model.base_model.encoder.layer[0].attention.self.query.weight[0, 0] += 1e-3
    other.fingerprint = fingerprint_backbone(other.model)
    with pytest.raises(AdapterError, match="was trained on base 'minilm'"):
        check_base_matches(manifest, other)  # what registry/loading.py checks before it attaches an adapter
    assert AdapterManifest.read(folder).base_fingerprint == trained.base.fingerprint


@pytest.mark.slow
def test_token_seeded_prefix_is_exactly_real_context_for_a_decoder(model_cache: Path) -> None:
    """SmolLM2: a prefix seeded from text T, read before S, gives the logits of reading T then S.

    This pins down the key/value layout: a random prefix is noise to a decoder, a seeded one is real context.
    """
    config = tiny_config(base="smollm2", virtual_tokens=6)
    base = load_base_for_classification(resolve_base("smollm2", model_cache), ["negative", "positive"])
    assert base.ref.is_decoder and base.tokenizer.padding_side == "left"
    context = ["An honest, warm and very funny film."]
    ids = base.tokenizer("dull and far too long", return_tensors="pt")["input_ids"]
    prefix_ids = _first_tokens(base, context, 6)
    with torch.no_grad():
        joined = base.model(input_ids=torch.cat([prefix_ids, ids], dim=1)).logits
    model = attach_new_adapter(base, config)
    init_prefix_from_tokens(model, base, context)
    model.eval()
    with torch.no_grad():
        prefixed = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(prefixed, joined, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_smollm2_prefix_trains_and_roundtrips(model_cache: Path, tmp_path: Path) -> None:
    trained, splits, fingerprint_before, _, data = _train(model_cache, base="smollm2", max_steps=3, batch_size=8)
    assert trained.base.ref.is_decoder
    assert fingerprint_backbone(trained.model.get_base_model()) == fingerprint_before
    folder = tmp_path / "adapter"
    manifest = save_adapter(trained, folder, data_fingerprint=data.fingerprint)
    assert manifest.base == "smollm2"
    texts = splits.test["text"].tolist()[:8]
    reloaded, tokenizer = _plain_peft_reload(trained.base.ref, folder, manifest)
    actual = predict_probabilities(lambda b: reloaded(**b).logits, tokenizer, texts, manifest.labels, 32)
    np.testing.assert_allclose(actual.probabilities, trained.predict(texts).probabilities, atol=1e-5)
    truth = splits.test["label"].tolist()[:8]
    metrics = classification_metrics(truth, actual.predicted, manifest.labels)
    # Counted here by hand: the share of the eight answers that match, and the mean of the two per-class F1s.
    right = [t == p for t, p in zip(truth, actual.predicted, strict=True)]
    per_class = []
    for label in manifest.labels:
        tp = sum(r and t == label for r, t in zip(right, truth, strict=True))
        answered, actual_count = list(actual.predicted).count(label), truth.count(label)
        per_class.append(2 * tp / (answered + actual_count) if answered + actual_count else 0.0)
    assert metrics["n"] == 8
    assert metrics["accuracy"] == pytest.approx(sum(right) / 8)
    assert metrics["macro_f1"] == pytest.approx(sum(per_class) / len(per_class))


def test_the_same_config_trains_the_same_adapter(model_cache: Path) -> None:
    first, *_ = _train(model_cache)
    second, *_ = _train(model_cache)
    for name, tensor in first.trainable_state().items():
        torch.testing.assert_close(tensor, second.trainable_state()[name], msg=name)


def test_smollm2_converts_into_the_cache_folder_the_settings_name_when_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefix_registry.training import base_models

    converted_into: list[Path] = []
    some_model = Path(resolve_base("minilm").load_path)  # what the fake conversion "writes"

    def convert(gguf: Path, cache_dir: Path) -> Path:
        converted_into.append(cache_dir)
        return some_model

    monkeypatch.setattr(base_models, "materialise_gguf", convert)
    monkeypatch.delenv("PREFIX_REGISTRY_CACHE_DIR", raising=False)
    monkeypatch.setenv("PREFIX_REGISTRY_HOME", str(tmp_path / "home"))
    base_models.resolve_base("smollm2")
    monkeypatch.setenv("PREFIX_REGISTRY_CACHE_DIR", str(tmp_path / "cache"))
    base_models.resolve_base("smollm2")
    base_models.resolve_base("smollm2", tmp_path / "given")
    assert converted_into == [tmp_path / "home" / "cache", tmp_path / "cache", tmp_path / "given"]
