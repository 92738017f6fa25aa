"""The training loop: only the adapter (and the task head, and a BERT pooler) learn; the base stays frozen.

base + splits + config --train_prefix--> TrainedPrefix (PEFT model, history, best epoch, timings)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from tqdm.auto import tqdm

from prefix_registry.errors import AdapterError
from prefix_registry.kinds import TaskKind, kind_named
from prefix_registry.kinds.probe import probe_summary
from prefix_registry.training.base_models import LoadedBase
from prefix_registry.training.cheap_dropout import training_dropout
from prefix_registry.training.config import ClassWeighting, HeadInit, Method, TrainConfig
from prefix_registry.training.evaluation import Predictions, predict_outputs, predict_probabilities
from prefix_registry.training.generation import EncodedPair, encode_pairs, generate_texts, pad_pairs
from prefix_registry.training.head_init import (
    fit_head_as_probe,
    init_head_as_probe,
    split_head_inputs,
    trained_head,
)
from prefix_registry.training.methods import (
    attach_new_adapter,
    init_prefix_from_tokens,
    init_projected_prefix_from_tokens,
)
from prefix_registry.training.precision import Precision, computing_at, resolve_training_precision
from prefix_registry.training.splits import DataSplits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    """Where training stood at one evaluation on the validation split (evaluation 0: the starting point)."""

    evaluation: int
    epoch: float  # epochs completed, e.g. 1.5 half-way through the second; 0.0 before any step
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
    best_epoch: float = 0.0
    best_evaluation: int = 0
    steps: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False
    stop_reason: str = ""
    class_weights: list[float] | None = None
    head_probe: dict[str, Any] | None = None  # how the probe-initialised head was fitted (None: random or warm)
    head_refit: dict[str, Any] | None = None  # the head fitted again on the trained features, and whether it was kept
    precision: Precision = Precision.FP32  # what the base's passes computed at while training and validating

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def total_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def best_validation(self) -> dict[str, Any]:
        return self.history[self.best_evaluation].validation

    @property
    def kind(self) -> TaskKind:
        return self.config.task_kind

    def predict_outputs(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Raw head outputs (n_texts, head width), for the task's kind to read."""
        self.model.eval()
        return predict_outputs(
            lambda batch: self.model(**batch).logits,
            self.base.tokenizer,
            texts,
            self.kind.head_width(self.labels),
            max_length=self.config.max_length,
            batch_size=self.config.eval_batch_size,
            progress=progress,
        )

    def predicted(self, texts: Sequence[str], progress: bool = False) -> list[Any]:
        """What the kind predicts for each text (a label for classification, greedy text for generation), as its
        metrics compare."""
        if self.kind.generates:
            return self.kind.predicted(np.asarray(self.generate(texts), dtype=object), self.labels)
        return self.kind.predicted(self.predict_outputs(texts, progress), self.labels)

    def generate(self, texts: Sequence[str]) -> list[str]:
        """Greedy outputs of the adapter for each text (a kind that generates), read with the config's instruction."""
        self.model.eval()
        config = self.config
        return generate_texts(
            self.model,
            self.base.tokenizer,
            list(texts),
            config.instruction,
            config.max_length,
            config.max_new_tokens,
            config.eval_batch_size,
        )

    def evaluate(self, frame: Any) -> dict[str, Any]:
        """The kind's metrics on a labelled frame (`text`, `label`)."""
        return self.kind.metrics(frame["label"].tolist(), self.predicted(frame["text"].tolist()), self.labels)

    def predict(self, texts: Sequence[str], progress: bool = False) -> Predictions:
        """Class probabilities (classification)."""
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
    """Train an adapter of `config.method` on `splits.train`, keeping the state with the best validation score on
    the decision metric of `config`'s kind (macro-F1 for classification).

    A starting point worth keeping (a probe-initialised head, or the parent's state for a warm start) is evaluated
    first and competes with every later evaluation, so training never returns something worse on validation than
    where it started; a random start is not evaluated (it would cost a validation pass and never win). Training
    stops at `config.epochs`, after `config.max_minutes`, or when `config.patience` evaluations in a row bring no
    gain.

    Args:
        base: the frozen base, loaded with a head for `splits.labels`. It becomes part of the returned model.
        on_evaluation: called after each validation pass (e.g. to log metrics as training goes).
        warm_start: a `TrainedPrefix.trainable_state()` of an earlier adapter with the same method, size and labels;
            training continues from it instead of from scratch.
        progress: show a progress bar over optimizer steps.
    """
    started = time.perf_counter()
    seed_everything(config.seed)
    model = attach_new_adapter(base, config)
    trained = TrainedPrefix(model=model, base=base, config=config, labels=list(splits.labels))
    trained.precision = resolve_training_precision(config.precision)
    if warm_start is not None:
        load_trainable_state(model, warm_start)
    else:
        initialise(trained, splits, progress)

    plan = plan_steps(
        [p for p in model.parameters() if p.requires_grad],
        base.tokenizer,
        splits,
        config,
        config.effective_learning_rate,
        head_params=[p for n, p in model.named_parameters() if p.requires_grad and "modules_to_save" in n],
        head_learning_rate=config.head_learning_rate,
        class_weighting=config.class_weighting,
        kind=trained.kind,
    )
    trained.class_weights = None if plan.class_weights is None else plan.class_weights.tolist()
    deadline = started + config.max_minutes * 60 if config.max_minutes is not None else None
    steps_per_epoch = math.ceil(len(plan.encoded) / config.batch_size)
    evaluate_every = max(1, math.ceil(steps_per_epoch / config.evaluations_per_epoch))

    kind = trained.kind
    best_score: float | None = None
    best_state = trained.trainable_state()
    losses: list[float] = []
    without_gain, step = 0, 0

    def evaluate() -> bool:
        """Validate, keep the state if it is the best so far; True when patience has run out."""
        nonlocal best_score, best_state, without_gain, losses
        with computing_at(trained.precision):
            metrics = trained.evaluate(splits.validation)
        report = EpochReport(
            evaluation=len(trained.history),
            epoch=round(step / steps_per_epoch, 3),
            step=step,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            validation=metrics,
            seconds=time.perf_counter() - started,
        )
        trained.history.append(report)
        losses = []
        if on_evaluation is not None:
            on_evaluation(report)
        if kind.better(metrics[kind.decision_metric], best_score):
            best_score, best_state, without_gain = metrics[kind.decision_metric], trained.trainable_state(), 0
            trained.best_epoch, trained.best_evaluation = report.epoch, report.evaluation
            return False
        without_gain += 1
        return without_gain >= config.patience

    if warm_start is not None or config.head_init is HeadInit.PROBE:
        evaluate()  # a start worth keeping competes with what training makes of it; a random start is not
    bar = tqdm(total=plan.total_steps, desc=f"train {config.method.value}", disable=not progress, unit="step")
    with training_dropout(model, config.cheap_dropout_masks, config.attention_dropout):
        while step < plan.total_steps and not trained.stop_reason:
            model.train()
            for indices in length_grouped_batches(plan.lengths, config.batch_size, plan.rng):
                losses.append(train_step(model, plan, base.tokenizer, indices, trained.precision))
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", epoch=f"{step / steps_per_epoch:.1f}")
                out_of_time = deadline is not None and time.perf_counter() > deadline
                if step % evaluate_every == 0 or step >= plan.total_steps or out_of_time:
                    if evaluate():
                        trained.stop_reason = f"no validation gain in {config.patience} evaluations"
                    elif out_of_time:
                        trained.stop_reason = f"time budget of {config.max_minutes} min spent"
                    model.train()
                if trained.stop_reason or step >= plan.total_steps:
                    break
    bar.close()
    trained.stopped_early = bool(trained.stop_reason)
    if trained.stopped_early:
        logger.info("stopped at step %d: %s", step, trained.stop_reason)
    load_trainable_state(model, best_state)
    if config.refit_head and kind.head_is_linear_probe:
        trained.head_refit = refit_head(trained, splits, progress)
    model.eval()
    trained.steps = step
    trained.train_seconds = time.perf_counter() - started
    return trained


def initialise(trained: TrainedPrefix, splits: DataSplits, progress: bool = False) -> None:
    """Start a fresh adapter from real tokens and its head from a linear probe (as the config says)."""
    config, model, base = trained.config, trained.model, trained.base
    if config.method is Method.PREFIX and config.prefix_init == "tokens":
        if config.prefix_projection:
            init_projected_prefix_from_tokens(model, base, splits.train["text"].tolist())
        else:
            init_prefix_from_tokens(model, base, splits.train["text"].tolist())
    if config.head_init is HeadInit.PROBE and config.task_kind.head_is_linear_probe:
        probe = init_head_as_probe(
            model, base.tokenizer, splits, config.max_length, config.eval_batch_size, progress=progress
        )
        trained.head_probe = probe_summary(probe)


def refit_head(trained: TrainedPrefix, splits: DataSplits, progress: bool = False) -> dict[str, Any]:
    """Fit the head again as a linear probe (C and class weighting on validation) on the features the trained prompt
    gives, and keep it only if its validation macro-F1 beats the trained head's.

    Gradient steps leave the head wherever the schedule ended; a probe refitted on the final features is the
    best-regularised linear head for them (linear probe, fine-tune, then probe again).
    """
    config, model, kind = trained.config, trained.model, trained.kind
    head = trained_head(model)
    before = {name: tensor.detach().clone() for name, tensor in head.state_dict().items()}
    trained_f1 = float(trained.best_validation[kind.decision_metric])
    tokenizer = trained.base.tokenizer
    features = split_head_inputs(model, tokenizer, splits, config.max_length, config.eval_batch_size, progress)
    probe = fit_head_as_probe(model, splits, features)
    kept = kind.better(probe.validation_macro_f1, trained_f1)
    if kept:
        # The head is linear: its logits on the validation features are the model's, without another forward pass.
        with torch.no_grad():
            logits = head(torch.as_tensor(features[1], dtype=head.weight.dtype))
        predicted = kind.predicted(logits.numpy(), trained.labels)
        metrics = kind.metrics(splits.validation["label"].tolist(), predicted, trained.labels)
        trained.history[trained.best_evaluation] = dataclasses.replace(
            trained.history[trained.best_evaluation], validation=metrics
        )
    else:
        head.load_state_dict(before)
    return {**probe_summary(probe), f"trained_head_validation_{kind.decision_metric}": trained_f1, "kept": kept}


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
    class_weights: torch.Tensor | None = None
    kind: TaskKind = field(default_factory=lambda: kind_named(None))
    pairs: list[EncodedPair] | None = None  # a kind that generates: prompt + target ids and their token labels

    def batch(self, tokenizer: Any, indices: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The model inputs and the loss targets of the training rows `indices`."""
        if self.pairs is not None:
            return pad_pairs([self.pairs[i] for i in indices], tokenizer.pad_token_id)
        inputs = tokenizer.pad({"input_ids": [self.encoded[i] for i in indices]}, return_tensors="pt")
        return inputs, torch.as_tensor(self.targets[indices])


def plan_steps(
    params: list[torch.nn.Parameter],
    tokenizer: Any,
    splits: DataSplits,
    config: TrainConfig,
    learning_rate: float,
    head_params: list[torch.nn.Parameter] | None = None,
    head_learning_rate: float | None = None,
    class_weighting: ClassWeighting = ClassWeighting.NONE,
    kind: TaskKind | None = None,
) -> StepPlan:
    """AdamW on `params` with linear warmup then linear decay over `epochs` (or `max_steps`) of the train split.

    `head_params` (a subset of `params`) get `head_learning_rate`: a head that starts as a fitted probe needs a
    gentler step than a prompt that starts from scratch. `kind` (default: `config`'s) encodes the targets and
    weighs them.
    """
    kind = kind or config.task_kind
    targets = kind.encode_targets(splits.train["label"].tolist(), splits.labels)
    pairs: list[EncodedPair] | None = None
    if kind.generates:
        pairs = encode_pairs(tokenizer, splits.train, config.instruction, config.max_length, config.max_new_tokens)
        encoded = [pair.input_ids for pair in pairs]
    else:
        encoded = tokenizer(splits.train["text"].tolist(), truncation=True, max_length=config.max_length)["input_ids"]
    total_steps = config.epochs * math.ceil(len(encoded) / config.batch_size)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    head_ids = {id(p) for p in head_params or []}
    groups = [{"params": [p for p in params if id(p) not in head_ids], "lr": learning_rate}]
    if head_ids:
        groups.append({"params": [p for p in params if id(p) in head_ids], "lr": head_learning_rate or learning_rate})
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    warmup = max(1, int(total_steps * config.warmup_fraction))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (total_steps - step) / total_steps)
    )
    return StepPlan(
        encoded=encoded,
        targets=targets,
        lengths=np.array([len(ids) for ids in encoded]),
        total_steps=total_steps,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        rng=np.random.default_rng(config.seed),
        class_weights=kind.target_weights(targets, splits.labels, ClassWeighting(class_weighting).value),
        kind=kind,
        pairs=pairs,
    )


def train_one_epoch(
    model: torch.nn.Module, plan: StepPlan, tokenizer: Any, batch_size: int, bar: Any, step: int, epoch: int
) -> tuple[list[float], int]:
    """One pass of length-grouped batches (stopping at `plan.total_steps`); returns the losses and the step reached."""
    model.train()
    losses: list[float] = []
    for indices in length_grouped_batches(plan.lengths, batch_size, plan.rng):
        losses.append(train_step(model, plan, tokenizer, indices))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", epoch=epoch)
        if step >= plan.total_steps:
            break
    return losses, step


def train_step(
    model: torch.nn.Module,
    plan: StepPlan,
    tokenizer: Any,
    indices: np.ndarray,
    precision: Precision = Precision.FP32,
) -> float:
    """One optimizer step on the batch `indices` (class-weighted loss when the plan has weights); returns the loss.

    The forward pass runs at `precision` (bf16: autocast); the loss is taken in float32 and the backward pass runs
    outside autocast, each op's gradient in the dtype its forward used (PyTorch's recommended autocast pattern)."""
    loss = batch_loss(model, plan, tokenizer, indices, precision)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(plan.params, 1.0)
    plan.optimizer.step()
    plan.scheduler.step()
    plan.optimizer.zero_grad(set_to_none=True)
    return loss.item()


def batch_loss(
    model: torch.nn.Module,
    plan: StepPlan,
    tokenizer: Any,
    indices: np.ndarray,
    precision: Precision = Precision.FP32,
) -> torch.Tensor:
    """The kind's training loss on the batch `indices` (forward at `precision`, loss in float32)."""
    batch, targets = plan.batch(tokenizer, indices)
    with computing_at(precision):
        logits = model(**batch).logits
    if plan.pairs is not None:
        # PEFT's prompt methods put their virtual tokens in front of the logits (prefix tuning does not): the
        # targets name the text's positions, the last ones.
        logits = logits[:, -targets.shape[1] :, :]
    return plan.kind.loss(logits.float(), targets, plan.class_weights)


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
