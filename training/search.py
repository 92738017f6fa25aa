"""The search space of a sweep and its successive-halving schedule (plain values: no MLflow, no Prefect).

SearchSpace + seed --sample_trials--> [TrialSpec] (the defaults of each method first, then seeded draws)
rung results --survivors--> the trials that go on to the full budget
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from prefix_registry.errors import ConfigError
from prefix_registry.kinds import Direction
from prefix_registry.training.config import DEFAULT_LEARNING_RATES, Method, PromptInit, TrainConfig

# Real-token starts for each method ('-' where the method has a single one).
INITIALISATIONS: dict[Method, tuple[str, ...]] = {
    Method.PREFIX: ("tokens", "random"),
    Method.PROMPT: (PromptInit.VOCAB.value, PromptInit.TEXT.value, PromptInit.RANDOM.value),
    Method.PTUNING: ("-",),
}
# Reparameterisation of the trained vectors: PEFT's prefix MLP, P-tuning's encoder (always on), none for prompts.
REPARAMETERISATIONS: dict[Method, tuple[str, ...]] = {
    Method.PREFIX: ("none", "mlp"),
    Method.PROMPT: ("none",),
    Method.PTUNING: ("mlp",),
}


@dataclass(frozen=True)
class SearchSpace:
    """What a sweep may vary; every combination is a valid TrainConfig."""

    methods: tuple[str, ...] = field(default=("prefix", "prompt", "ptuning"), metadata={"help": "Methods to try."})
    virtual_tokens: tuple[int, ...] = field(default=(10, 20, 40), metadata={"help": "Prompt lengths to try."})
    learning_rate_scales: tuple[float, ...] = field(
        default=(0.5, 1.0, 2.0), metadata={"help": "Multiples of the method's default learning rate."}
    )

    def __post_init__(self) -> None:
        for method in self.methods:
            try:
                Method(method)
            except ValueError:
                raise ConfigError(
                    f"unknown method {method!r} in the search space; expected prefix, prompt or ptuning"
                ) from None
        if not self.virtual_tokens or not self.learning_rate_scales or not self.methods:
            raise ConfigError("a search space needs at least one method, prompt length and learning-rate scale")


@dataclass(frozen=True)
class TrialSpec:
    """One point of the search: the settings it changes from the base config."""

    number: int
    method: str
    virtual_tokens: int
    learning_rate: float
    init: str
    reparameterisation: str

    def config(self, base: TrainConfig) -> TrainConfig:
        """`base` with this trial's settings."""
        method = Method(self.method)
        changes: dict[str, Any] = {
            "method": method,
            "virtual_tokens": self.virtual_tokens,
            "learning_rate": self.learning_rate,
        }
        if method is Method.PREFIX:
            changes["prefix_init"] = self.init
            changes["prefix_projection"] = self.reparameterisation == "mlp"
        elif method is Method.PROMPT:
            changes["prompt_init"] = self.init
        return base.replace(**changes)

    def params(self) -> dict[str, Any]:
        """The trial's coordinates, as logged to its MLflow child run (the parallel-coordinates axes)."""
        return {f"trial_{key}": value for key, value in asdict(self).items()}


def default_trial(number: int, method: Method, base: TrainConfig) -> TrialSpec:
    defaults = base.replace(method=method, learning_rate=DEFAULT_LEARNING_RATES[method])
    init = {Method.PREFIX: defaults.prefix_init, Method.PROMPT: defaults.prompt_init.value}.get(method, "-")
    reparameterisation = {Method.PREFIX: "mlp" if defaults.prefix_projection else "none"}.get(
        method, REPARAMETERISATIONS[method][0]
    )
    return TrialSpec(
        number, method.value, defaults.virtual_tokens, defaults.effective_learning_rate, init, reparameterisation
    )


def sample_trials(space: SearchSpace, n_trials: int, base: TrainConfig, seed: int) -> list[TrialSpec]:
    """`n_trials` distinct trials: each method's defaults first (so the sweep is never worse than a plain train on
    validation), then seeded draws from the whole space."""
    if n_trials < 1:
        raise ConfigError(f"a sweep needs at least 1 trial, got {n_trials}")
    trials: list[TrialSpec] = []
    seen: set[tuple] = set()

    def add(spec: TrialSpec) -> None:
        key = astuple_without_number(spec)
        if key not in seen and len(trials) < n_trials:
            seen.add(key)
            trials.append(spec)

    for method in space.methods:
        add(default_trial(len(trials), Method(method), base))
    rng = random.Random(seed)
    grid_size = sum(
        len(space.virtual_tokens)
        * len(space.learning_rate_scales)
        * len(INITIALISATIONS[Method(m)])
        * len(REPARAMETERISATIONS[Method(m)])
        for m in space.methods
    )
    for _ in range(50 * n_trials):
        if len(trials) >= min(n_trials, grid_size):
            break
        method = Method(rng.choice(space.methods))
        add(
            TrialSpec(
                number=len(trials),
                method=method.value,
                virtual_tokens=rng.choice(space.virtual_tokens),
                learning_rate=DEFAULT_LEARNING_RATES[method] * rng.choice(space.learning_rate_scales),
                init=rng.choice(INITIALISATIONS[method]),
                reparameterisation=rng.choice(REPARAMETERISATIONS[method]),
            )
        )
    return trials


def astuple_without_number(spec: TrialSpec) -> tuple:
    return (spec.method, spec.virtual_tokens, round(spec.learning_rate, 10), spec.init, spec.reparameterisation)


def survivors(scores: dict[int, float], eta: int = 3, direction: Direction = Direction.HIGHER) -> list[int]:
    """Successive halving: the best 1/eta of the trials (at least one) by their validation score on the decision
    metric (`direction`: which way it gets better), best first; ties keep the lower trial number (the defaults come
    first)."""
    if not scores:
        return []
    keep = max(1, math.ceil(len(scores) / eta))
    sign = -1 if direction is Direction.HIGHER else 1
    return sorted(scores, key=lambda number: (sign * scores[number], number))[:keep]
