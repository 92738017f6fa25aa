"""Training at bf16: the setting, what `auto` resolves to, and a bf16 step that learns what an fp32 step learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prefix_registry.errors import ConfigError
from prefix_registry.training.base_models import load_base_for_classification, resolve_base
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.methods import attach_new_adapter
from prefix_registry.training.precision import (
    CpuSupport,
    Precision,
    computing_at,
    resolve_training_precision,
)
from prefix_registry.training.splits import split_labelled_texts
from prefix_registry.training.trainer import plan_steps, train_prefix, train_step
from tests.conftest import tiny_config, tiny_data

NO_BF16 = CpuSupport(bf16=False, int8=True)
WITH_BF16 = CpuSupport(bf16=True, int8=True)


def test_training_precision_defaults_to_fp32_and_refuses_int8() -> None:
    assert TrainConfig().precision == "fp32"
    assert TrainConfig(precision="BF16").precision == "bf16"
    with pytest.raises(ConfigError, match=r"fp32, bf16, auto; got 'int8' \(int8 is for serving only\)"):
        TrainConfig(precision="int8")
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        TrainConfig(precision="fp16")
    assert TrainConfig(precision="bf16").to_dict()["precision"] == "bf16"


def test_auto_trains_in_bf16_only_where_the_cpu_has_bf16_instructions() -> None:
    assert resolve_training_precision("auto", WITH_BF16) is Precision.BF16
    assert resolve_training_precision("auto", NO_BF16) is Precision.FP32
    assert resolve_training_precision("bf16", NO_BF16) is Precision.BF16  # asked for by name: done, if slowly
    assert resolve_training_precision("fp32", WITH_BF16) is Precision.FP32
    with pytest.raises(ConfigError, match="expected fp32 or bf16"):
        computing_at(Precision.INT8)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_a_bf16_step_gives_the_fp32_loss_and_gradient_direction(model_cache: Path, method: str) -> None:
    """The same batch from the same state: bf16 autocast's loss within 2 % of fp32's, its adapter gradient pointing
    the same way (cosine > 0.95), parameters float32 throughout."""
    config = tiny_config(method=method)
    splits = split_labelled_texts(tiny_data(), config.validation_fraction, config.test_fraction, config.seed)
    losses, gradients = {}, {}
    for precision in (Precision.FP32, Precision.BF16):
        base = load_base_for_classification(resolve_base(config.base, model_cache), splits.labels, seed=config.seed)
        torch.manual_seed(config.seed)
        model = attach_new_adapter(base, config)
        model.eval()  # no dropout: the two passes see the same network
        params = [p for p in model.parameters() if p.requires_grad]
        plan = plan_steps(
            params,
            base.tokenizer,
            splits,
            config,
            learning_rate=0.0,  # the step leaves the state as it is; only its loss and gradient are compared
            head_params=[],
            head_learning_rate=config.head_learning_rate,
            class_weighting=config.class_weighting,
            kind=config.task_kind,
        )
        adapter = next(p for n, p in model.named_parameters() if p.requires_grad and "prompt_encoder" in n)
        captured = _capture_gradient(adapter)
        losses[precision] = train_step(model, plan, base.tokenizer, np.arange(16), precision)
        gradients[precision] = captured[0].flatten()
        assert all(p.dtype is torch.float32 for p in params)
    assert losses[Precision.BF16] == pytest.approx(losses[Precision.FP32], rel=0.02)
    cosine = torch.nn.functional.cosine_similarity(gradients[Precision.FP32], gradients[Precision.BF16], dim=0)
    assert float(cosine) > 0.95


def _capture_gradient(parameter: torch.Tensor) -> list[torch.Tensor]:
    """A list that receives `parameter`'s gradient at the next backward pass (before clipping)."""
    captured: list[torch.Tensor] = []

    def keep(grad: torch.Tensor) -> torch.Tensor:
        captured.append(grad.detach().clone())
        return grad

    parameter.register_hook(keep)
    return captured


def test_a_bf16_run_trains_and_says_so(model_cache: Path) -> None:
    config = tiny_config(precision="bf16")
    splits = split_labelled_texts(tiny_data(), config.validation_fraction, config.test_fraction, config.seed)
    base = load_base_for_classification(resolve_base(config.base, model_cache), splits.labels, seed=config.seed)
    trained = train_prefix(base, splits, config, progress=False)
    assert trained.precision is Precision.BF16
    assert trained.steps > 0
    assert all(np.isfinite(report.train_loss) or report.step == 0 for report in trained.history)
    assert all(t.dtype is torch.float32 for t in trained.trainable_state().values())
    probabilities = trained.predict(splits.test["text"].tolist()).probabilities
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
