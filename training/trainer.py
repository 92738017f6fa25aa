"""The training loop: only the adapter (and the task head) learn; the base model stays frozen.

base + splits + config --train_prefix--> TrainedPrefix (PEFT model, history, best epoch, timings)
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from peft import PeftModel, get_peft_model
from tqdm.auto import tqdm

from prefix_registry.errors import AdapterError, ConfigError
from prefix_registry.training.base_models import LoadedBase
from prefix_registry.training.config import Method, TrainConfig
from prefix_registry.training.evaluation import Predictions, classification_metrics, predict_probabilities
from prefix_registry.training.methods import build_peft_config, init_prefix_from_tokens
from prefix_registry.training.splits import DataSplits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    """Where training stood after one evaluation on the validation split."""

    epoch: int
    step: int
    train_loss: float
    validation: dict[str, Any]
    seconds: float


@dataclass
class TrainedPrefix:
    """A trained adapter on its base, with what happened while training it."""

    model: PeftModel
    base: LoadedBase
    config: TrainConfig
    labels: list[str]
    history: list[EpochReport] = field(default_factory=list)
    best_epoch: int = 0
    steps: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def total_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def best_validation(self) -> dict[str, Any]:
        return next(report.validation for report in self.history if report.epoch == self.best_epoch)

    def predict(self, texts: Sequence[str], progress: bool = False) -> Predictions:
        self.model.eval()
        return predict_probabilities(
            lambda batch: self.model(**batch).logits,
            self.base.tokenizer,
            texts,
            self.labels,
            max_length=self.config.max_length,
            batch_size=self.config.eval_batch_size,
            progress=progress,
        )

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor by name: the full training state (P-tuning's encoder included), for warm starts."""
        return {
            name: param.detach().cpu().clone() for name, param in self.model.named_parameters() if param.requires_grad
        }


EpochCallback = Callable[[EpochReport], None]


def train_prefix(
    base: LoadedBase,
    splits: DataSplits,
    config: TrainConfig,
    on_evaluation: EpochCallback | None = None,
    warm_start: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
) -> TrainedPrefix:
    """Train an adapter of `config.method` on `splits.train`, selecting the epoch with the best validation macro-F1.

    Args:
        base: the frozen base, loaded with a head for `splits.labels`. It becomes part of the returned model.
        on_evaluation: called after each validation pass (e.g. to log metrics as training goes).
        warm_start: a `TrainedPrefix.trainable_state()` of an earlier adapter with the same method, size and labels;
            training continues from it instead of from scratch.
        progress: show a progress bar over optimizer steps.
    """
    seed_everything(config.seed)
    model = get_peft_model(base.model, build_peft_config(config, base))
    if warm_start is not None:
        load_trainable_state(model, warm_start)
    elif config.method is Method.PREFIX and config.prefix_init == "tokens":
        init_prefix_from_tokens(model, base, splits.train["text"].tolist())

    trained = TrainedPrefix(model=model, base=base, config=config, labels=list(splits.labels))
    trainable = [p for p in model.parameters() if p.requires_grad]
    plan = plan_steps(trainable, base.tokenizer, splits, config, config.effective_learning_rate)

    best_f1, best_state, evaluations_without_gain = -1.0, trained.trainable_state(), 0
    started = time.perf_counter()
    bar = tqdm(total=plan.total_steps, desc=f"train {config.method.value}", disable=not progress, unit="step")
    step = 0
    for epoch in range(1, config.epochs + 1):
        losses, step = train_one_epoch(model, plan, base.tokenizer, config.batch_size, bar, step, epoch)
        validation = trained.predict(splits.validation["text"].tolist())
        metrics = classification_metrics(splits.validation["label"].tolist(), validation.predicted, trained.labels)
        report = EpochReport(
            epoch=epoch,
            step=step,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            validation=metrics,
            seconds=time.perf_counter() - started,
        )
        trained.history.append(report)
        if on_evaluation is not None:
            on_evaluation(report)
        if metrics["macro_f1"] > best_f1:
            best_f1, best_state, trained.best_epoch, evaluations_without_gain = (
                metrics["macro_f1"],
                trained.trainable_state(),
                epoch,
                0,
            )
        else:
            evaluations_without_gain += 1
        if step >= plan.total_steps:
            break
        if evaluations_without_gain >= config.patience:
            trained.stopped_early = True
            logger.info("early stop after epoch %d: no validation gain for %d epochs", epoch, config.patience)
            break
    bar.close()
    load_trainable_state(model, best_state)
    model.eval()
    trained.steps = step
    trained.train_seconds = time.perf_counter() - started
    return trained


@dataclass
class StepPlan:
    """The tokenised training split and the optimizer schedule: the recipe every trainer here shares."""

    encoded: list[list[int]]
    targets: np.ndarray
    lengths: np.ndarray
    total_steps: int
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rng: np.random.Generator


def plan_steps(
    params: list[torch.nn.Parameter], tokenizer: Any, splits: DataSplits, config: TrainConfig, learning_rate: float
) -> StepPlan:
    """AdamW on `params` with linear warmup then linear decay over `epochs` (or `max_steps`) of the train split."""
    label_index = {label: i for i, label in enumerate(splits.labels)}
    unknown = sorted(set(splits.train["label"]) - set(label_index))
    if unknown:
        raise ConfigError(f"training labels {unknown} are not in the label set {splits.labels}")
    encoded = tokenizer(splits.train["text"].tolist(), truncation=True, max_length=config.max_length)["input_ids"]
    total_steps = config.epochs * math.ceil(len(encoded) / config.batch_size)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    warmup = max(1, int(total_steps * config.warmup_fraction))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (total_steps - step) / total_steps)
    )
    return StepPlan(
        encoded=encoded,
        targets=np.array([label_index[label] for label in splits.train["label"]]),
        lengths=np.array([len(ids) for ids in encoded]),
        total_steps=total_steps,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        rng=np.random.default_rng(config.seed),
    )


def train_one_epoch(
    model: torch.nn.Module, plan: StepPlan, tokenizer: Any, batch_size: int, bar: Any, step: int, epoch: int
) -> tuple[list[float], int]:
    """One pass of length-grouped batches (stopping at `plan.total_steps`); returns the losses and the step reached."""
    model.train()
    losses: list[float] = []
    for indices in length_grouped_batches(plan.lengths, batch_size, plan.rng):
        batch = tokenizer.pad({"input_ids": [plan.encoded[i] for i in indices]}, return_tensors="pt")
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, torch.as_tensor(plan.targets[indices]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plan.params, 1.0)
        plan.optimizer.step()
        plan.scheduler.step()
        plan.optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", epoch=epoch)
        if step >= plan.total_steps:
            break
    return losses, step


def load_trainable_state(model: PeftModel, state: dict[str, torch.Tensor]) -> None:
    """Copy a saved trainable state into `model`, refusing any difference in names or shapes."""
    params = {name: param for name, param in model.named_parameters() if param.requires_grad}
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise AdapterError(
            f"warm-start state does not fit this adapter: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(method, base model and virtual tokens must match the parent's)"
        )
    with torch.no_grad():
        for name, param in params.items():
            if param.shape != state[name].shape:
                raise AdapterError(
                    f"warm-start tensor {name} has shape {tuple(state[name].shape)}, expected {tuple(param.shape)} "
                    "(labels, base model and virtual tokens must match the parent's)"
                )
            param.copy_(state[name])


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches whose texts have similar lengths: random order, far less padding than random batches."""
    permutation = rng.permutation(len(lengths))
    window = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, len(permutation), window):
        chunk = permutation[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
