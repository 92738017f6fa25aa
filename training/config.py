"""The typed configuration of one training run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from prefix_registry.config_values import field_default, field_help
from prefix_registry.errors import ConfigError
from prefix_registry.training.pooling import Pooling
from prefix_registry.training.precision import training_precision_name

if TYPE_CHECKING:
    from prefix_registry.kinds import TaskKind

# The built-in kind (kinds.DEFAULT_KIND), spelled out: the kinds load torch, and reading this module (the CLI builds
# `prefixctl train`'s options from TrainConfig's fields) must not. A config checks its kind when it is made.
DEFAULT_KIND = "classification"


class Method(StrEnum):
    """The continuous-prompt method that is trained; the base model stays frozen in all three."""

    PREFIX = "prefix"  # trained key/value vectors prepended in every attention layer
    PROMPT = "prompt"  # trained input embeddings prepended to the text
    PTUNING = "ptuning"  # input embeddings produced by a small trained encoder (P-tuning)


class PromptInit(StrEnum):
    """How prompt tuning starts its virtual tokens."""

    RANDOM = "random"
    TEXT = "text"
    VOCAB = "vocab"  # embeddings of tokens sampled from the vocabulary: real-token scale, no task wording


class ClassWeighting(StrEnum):
    """How the loss treats classes of different sizes."""

    AUTO = "auto"  # balanced weights when the largest class has kinds/imbalance.py's IMBALANCE_RATIO x the smallest
    BALANCED = "balanced"  # weights inversely proportional to class frequency
    NONE = "none"


class HeadInit(StrEnum):
    """Where the task head starts."""

    PROBE = "probe"  # a logistic regression fitted on the frozen features the head reads (linear probe, then tune)
    RANDOM = "random"


# What versions recorded before these settings existed were trained with (their checkpoints have these shapes).
SHAPES_BEFORE_ISSUE_9: dict[str, Any] = {"train_pooler": False, "prefix_projection": False, "pooling": "cls"}

# Measured on MiniLM / Rotten Tomatoes (bench/baselines.py): prompt tuning needs a larger step than the others.
DEFAULT_LEARNING_RATES: dict[Method, float] = {
    Method.PREFIX: 1e-2,
    Method.PROMPT: 3e-2,
    Method.PTUNING: 5e-3,
}


@dataclass
class TrainConfig:
    """Everything that decides what a training run produces, apart from the data."""

    method: Method = field(default=Method.PREFIX, metadata={"help": "prefix | prompt | ptuning"})
    kind: str = field(
        default=DEFAULT_KIND,
        metadata={
            "help": "The kind of task (kinds/): 'classification' (one label per text, judged by macro-F1), "
            "'generation' (a decoder base writes the target text, judged by ROUGE-L) or another registered kind."
        },
    )
    base: str = field(
        default="minilm",
        metadata={"help": "minilm, smollm2, a local Hugging Face model directory, or a hub model name"},
    )
    virtual_tokens: int = field(default=20, metadata={"help": "Number of virtual tokens the adapter learns."})
    prompt_init: PromptInit = field(
        default=PromptInit.VOCAB,
        metadata={
            "help": "Prompt tuning only: 'vocab' starts from sampled real tokens' embeddings, 'text' from "
            "init_text's, 'random' from random vectors."
        },
    )
    init_text: str = field(
        default="Classify the sentiment of this text:",
        metadata={"help": "Prompt tuning with prompt_init=text: the words the virtual tokens start from."},
    )
    prefix_init: str = field(
        default="tokens",
        metadata={
            "help": "Prefix tuning only: 'tokens' starts the prefix from real tokens' key/values (a random prefix "
            "wrecks a decoder at step 0), 'random' keeps PEFT's random start."
        },
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": "AdamW learning rate; None takes the method's default."}
    )
    head_learning_rate: float = field(
        default=1e-2,
        metadata={"help": "AdamW learning rate of the task head (and a trained pooler)."},
    )
    prefix_projection: bool = field(
        default=False,
        metadata={"help": "Prefix tuning only: reparameterise the prefix through PEFT's MLP (prefix_projection)."},
    )
    train_pooler: bool = field(
        default=False,
        metadata={
            "help": "Also train the base's pooler (BERT-style encoders), saved with the adapter. Off by default: at "
            "the head's learning rate it wrecked the probe-initialised start (measured on Rotten Tomatoes)."
        },
    )
    pooling: Pooling = field(
        default=Pooling.MEAN,
        metadata={
            "help": "Encoders only: 'mean' (the head reads the mean of the token states, as the linear probe does) "
            "or 'cls' (BERT's pooled [CLS] token). Decoders read the last token."
        },
    )
    head_init: HeadInit = field(
        default=HeadInit.RANDOM,
        metadata={
            "help": "random | probe: where the head starts. A probe start begins at the probe's score but the prompt "
            "then barely learns (measured: docs/experiments.md); refit_head brings the probe in at the end."
        },
    )
    refit_head: bool = field(
        default=True,
        metadata={
            "help": "After training, fit the head again as a linear probe on the trained prompt's features and keep "
            "it when validation macro-F1 says so (one more pass over the training split)."
        },
    )
    class_weighting: ClassWeighting = field(
        default=ClassWeighting.AUTO,
        metadata={"help": "auto | balanced | none: class weights of the training loss."},
    )
    cheap_dropout_masks: bool = field(
        default=True,
        metadata={
            "help": "On CPU, draw the base's dropout masks four to a random word instead of one per element: the "
            "same Bernoulli masks, ~15 % cheaper steps on MiniLM (docs/experiments.md, 'Training time'). Off: "
            "PyTorch's dropout."
        },
    )
    attention_dropout: bool = field(
        default=False,
        metadata={
            "help": "Keep the base's attention-probability dropout while training. Off by default: the fused "
            "attention kernel then runs (~12 % cheaper steps on 128-token texts) and macro-F1 moved by -0.5 to +0.3 "
            "points on 1,500-3,000-row test sets; the hidden-state dropouts stay."
        },
    )
    instruction: str = field(
        default="",
        metadata={
            "help": "Generation tasks: the instruction template the input is read with, '{input}' marking where the "
            "input goes (without it, the input follows on its own lines); filled into the base's chat template. "
            "Stored with the version; the zero-shot baseline reads the same."
        },
    )
    max_new_tokens: int = field(
        default=48,
        metadata={
            "help": "Generation tasks: at most this many tokens are generated (greedy) per input; training targets "
            "are cut to the same length."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Training batch size."})
    epochs: int = field(default=4, metadata={"help": "At most this many passes over the training split."})
    max_minutes: float | None = field(
        default=30.0,
        metadata={
            "help": "Stop training (keeping the best state so far) after this many minutes (None, from Python or a "
            "flow's config: no limit)."
        },
    )
    evaluations_per_epoch: int = field(
        default=2, metadata={"help": "Validation passes per epoch; patience counts these."}
    )
    max_steps: int | None = field(
        default=None,
        metadata={"help": "Stop after this many optimizer steps (overrides epochs when reached)."},
    )
    patience: int = field(
        default=4,
        metadata={"help": "Stop when validation macro-F1 has not improved for this many evaluations."},
    )
    seed: int = field(default=42, metadata={"help": "Seed for the split, initialisation and batch order."})
    max_length: int = field(default=128, metadata={"help": "Texts are truncated to this many tokens."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Share of the data held out for validation."})
    test_fraction: float = field(default=0.1, metadata={"help": "Share of the data held out for the final test."})
    warmup_fraction: float = field(default=0.06, metadata={"help": "Share of steps spent warming the rate up."})
    encoder_hidden_size: int = field(default=128, metadata={"help": "P-tuning only: width of the prompt encoder."})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size for evaluation and prediction."})
    precision: str = field(
        default="fp32",
        metadata={
            "help": "fp32 | bf16 | auto: the frozen base's forward and backward passes while training and validating "
            "(bf16: torch autocast, the adapter, head and optimizer stay float32; auto: bf16 where the CPU has bf16 "
            "instructions, else fp32). Registered scores are always computed at fp32. fp32 by default: bf16 steps "
            "were 1.06-1.28x faster and moved macro-F1 by 1.3 points on one of three data sets (bench/README.md)."
        },
    )

    def __post_init__(self) -> None:
        self.method = _as_enum(Method, self.method, "method")
        from prefix_registry.kinds import kind_named

        self.kind = kind_named(self.kind).name  # refuses an unknown kind, naming the known ones
        self.prompt_init = _as_enum(PromptInit, self.prompt_init, "prompt_init")
        self.head_init = _as_enum(HeadInit, self.head_init, "head_init")
        self.pooling = _as_enum(Pooling, self.pooling, "pooling")
        self.precision = training_precision_name(self.precision)
        if self.train_pooler and self.pooling is Pooling.MEAN:
            raise ConfigError("train_pooler=True needs pooling='cls': with mean pooling the pooler is not read")
        self.class_weighting = _as_enum(ClassWeighting, self.class_weighting, "class_weighting")
        if self.prefix_init not in ("tokens", "random"):
            raise ConfigError(f"prefix_init must be 'tokens' or 'random', got {self.prefix_init!r}")
        _require(self.virtual_tokens, "virtual_tokens", minimum=1, maximum=512)
        _require(self.batch_size, "batch_size", minimum=1)
        _require(self.eval_batch_size, "eval_batch_size", minimum=1)
        _require(self.epochs, "epochs", minimum=1)
        _require(self.patience, "patience", minimum=1)
        _require(self.max_length, "max_length", minimum=8)
        _require(self.encoder_hidden_size, "encoder_hidden_size", minimum=1)
        _require(self.max_new_tokens, "max_new_tokens", minimum=1, maximum=1024)
        _require(self.evaluations_per_epoch, "evaluations_per_epoch", minimum=1, maximum=20)
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max_minutes must be > 0 (or None for no limit), got {self.max_minutes}")
        if not self.head_learning_rate > 0:
            raise ConfigError(f"head_learning_rate must be > 0, got {self.head_learning_rate}")
        if self.max_steps is not None:
            _require(self.max_steps, "max_steps", minimum=1)
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 0.5:
                raise ConfigError(f"{name} must be between 0 and 0.5 (exclusive), got {value}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.prompt_init is PromptInit.TEXT and not self.init_text.strip():
            raise ConfigError("prompt_init=text needs a non-empty init_text")
        if not self.base.strip():
            raise ConfigError("base must name a model: minilm, smollm2, a local directory or a hub name")

    @property
    def task_kind(self) -> TaskKind:
        """The registered kind this config trains."""
        from prefix_registry.kinds import kind_named

        return kind_named(self.kind)

    @property
    def effective_learning_rate(self) -> float:
        """The learning rate the run uses: the configured one, or the method's default."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES[self.method]

    def to_dict(self) -> dict[str, Any]:
        """Plain values (enums as strings), as logged to MLflow and stored with a version."""
        values = dataclasses.asdict(self)
        values["method"] = self.method.value
        values["prompt_init"] = self.prompt_init.value
        values["head_init"] = self.head_init.value
        values["pooling"] = self.pooling.value
        values["class_weighting"] = self.class_weighting.value
        values["learning_rate"] = self.effective_learning_rate
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config, refusing keys that are not fields (a typo must not be silently ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_stored(cls, values: dict[str, Any]) -> TrainConfig:
        """A config as recorded with an existing version: settings that shape the trainable state and are missing
        from an older record take the value they had before they existed, so a warm start still fits its parent."""
        return cls.from_dict({**SHAPES_BEFORE_ISSUE_9, **values})

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (None values are ignored, so CLI options can be passed straight in)."""
        return TrainConfig.from_dict(
            {**dataclasses.asdict(self), **{k: v for k, v in changes.items() if v is not None}}
        )


def _as_enum(enum_type: type[StrEnum], value: object, name: str) -> Any:
    try:
        return enum_type(cast(str, value))  # a non-string raises ValueError like any unknown value
    except ValueError:
        choices = ", ".join(member.value for member in enum_type)
        raise ConfigError(f"{name} must be one of {choices}; got {value!r}") from None


def _require(value: object, name: str, minimum: int, maximum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name} must be {bound}, got {value}")


def config_default(name: str) -> Any:
    """The default of one TrainConfig field (an enum as its value), for the command-line option that sets it."""
    return field_default(TrainConfig, name)


def config_help(name: str) -> str:
    """The help text of one TrainConfig field: the help of the command-line option that sets it."""
    return field_help(TrainConfig, name)
