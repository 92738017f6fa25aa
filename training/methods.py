"""PEFT configurations for the three continuous-prompt methods, and the prefix's starting point."""

from __future__ import annotations

from typing import Any, cast

import torch
from peft import (
    PeftConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptEncoderReparameterizationType,
    PromptTuningConfig,
    PromptTuningInit,
    TaskType,
    get_peft_model,
)
from transformers import DynamicCache

from prefix_registry.errors import ConfigError
from prefix_registry.training.base_models import LoadedBase
from prefix_registry.training.config import Method, PromptInit, TrainConfig
from prefix_registry.training.pooling import install_pooling


def attach_new_adapter(base: LoadedBase, config: TrainConfig) -> PeftModel:
    """A fresh adapter of `config.method` on `base`, its head reading `config.pooling` (the one way to build the
    model a config trains, so that pooling is never forgotten)."""
    install_pooling(base.model, config.pooling)
    return cast(PeftModel, get_peft_model(base.model, build_peft_config(config, base)))


def build_peft_config(config: TrainConfig, base: LoadedBase) -> PeftConfig:
    """The PEFT config for `config.method`, for the task type of `config`'s kind on `base`."""
    common: dict = {"task_type": TaskType(config.task_kind.peft_task_type), "num_virtual_tokens": config.virtual_tokens}
    if config.train_pooler and has_pooler(base):
        # PEFT adds the head itself; the pooler joins it as a trained module saved in the adapter, so a plain
        # `PeftModel.from_pretrained` restores it.
        common["modules_to_save"] = [POOLER]
    if config.method is Method.PREFIX:
        # With projection PEFT saves the projected key/values (not the MLP), so the exported adapter stays plain.
        return PrefixTuningConfig(
            **common,
            prefix_projection=config.prefix_projection,
            encoder_hidden_size=config.encoder_hidden_size,
        )
    if config.method is Method.PROMPT:
        if config.prompt_init is PromptInit.VOCAB:
            return PromptTuningConfig(**common, prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
        if config.prompt_init is PromptInit.TEXT:
            return PromptTuningConfig(
                **common,
                prompt_tuning_init=PromptTuningInit.TEXT,
                prompt_tuning_init_text=config.init_text,
                tokenizer_name_or_path=base.ref.load_path,
            )
        return PromptTuningConfig(**common, prompt_tuning_init=PromptTuningInit.RANDOM)
    if config.method is Method.PTUNING:
        return PromptEncoderConfig(
            **common,
            encoder_hidden_size=config.encoder_hidden_size,
            encoder_reparameterization_type=PromptEncoderReparameterizationType.MLP,
        )
    raise ConfigError(f"unknown method {config.method!r}")


POOLER = "pooler"


def has_pooler(base: LoadedBase) -> bool:
    """Whether the base (BERT-style) feeds its head through a pooler module of its own."""
    backbone = getattr(base.model, str(base.model.base_model_prefix), None)
    return isinstance(getattr(backbone, POOLER, None), torch.nn.Module)


def init_prefix_from_tokens(model: PeftModel, base: LoadedBase, texts: list[str]) -> None:
    """Start a prefix as the key/values the frozen base computes for real text.

    PEFT starts a prefix from random vectors, which a decoder reads as garbage context (its zero-shot accuracy
    collapses before training starts). Real tokens' key/values are context the model already understands. Only
    prefix tuning without projection has a key/value table to fill.
    """
    peft_config = model.active_peft_config
    # torch types module attributes as `Tensor | Module`; these are PEFT's modules (torch ships no finer types).
    encoder: Any = model.prompt_encoder[model.active_adapter]
    n_tokens = peft_config.num_virtual_tokens
    token_ids = _first_tokens(base, texts, n_tokens)
    cache = DynamicCache()
    backbone: Any = model.get_base_model().base_model  # e.g. BertModel or LlamaModel, without the task head
    with torch.no_grad():
        backbone(
            input_ids=token_ids,
            attention_mask=torch.ones_like(token_ids),
            past_key_values=cache,
            use_cache=True,
        )
        columns = []
        for layer in cast(list[Any], cache.layers):
            # (1, heads, tokens, head_dim) -> (tokens, heads * head_dim), PEFT's layout for one layer's key or value
            for states in (layer.keys, layer.values):
                columns.append(states[0].permute(1, 0, 2).reshape(n_tokens, -1))
        table = torch.cat(columns, dim=-1)
        if table.shape != encoder.embedding.weight.shape:
            raise ConfigError(
                f"prefix table shape {tuple(encoder.embedding.weight.shape)} does not match the base's key/values "
                f"{tuple(table.shape)}; use prefix_init='random' for this base"
            )
        encoder.embedding.weight.copy_(table)


def init_projected_prefix_from_tokens(model: PeftModel, base: LoadedBase, texts: list[str]) -> None:
    """Start a projected prefix's input table (one embedding per virtual token) from real tokens' embeddings."""
    encoder: Any = model.prompt_encoder[model.active_adapter]
    token_ids = _first_tokens(base, texts, model.active_peft_config.num_virtual_tokens)[0]
    base_model: Any = model.get_base_model()
    embeddings = base_model.get_input_embeddings().weight
    with torch.no_grad():
        encoder.embedding.weight.copy_(embeddings[token_ids])


def _first_tokens(base: LoadedBase, texts: list[str], n_tokens: int) -> torch.Tensor:
    ids: list[int] = []
    for text in texts:
        ids.extend(base.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= n_tokens:
            break
    if len(ids) < n_tokens:
        filler = base.tokenizer.pad_token_id or 0
        ids.extend([filler] * (n_tokens - len(ids)))
    return torch.tensor([ids[:n_tokens]])
