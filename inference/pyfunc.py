"""A registered version as an MLflow pyfunc model: what `mlflow.pyfunc.load_model("models:/TASK@champion")` and
`mlflow models serve` run, through the same forward engine as the server.

A version's model folder is its adapter folder with MLflow's files beside it (registry/mlflow_model.py writes them).
Its `MLmodel` names this module as the pyfunc's loader (MLflow's "custom loader module" form: code from the
installed package, no pickle) and carries a `PyfuncConfig` as the model config. MLflow calls

    _load_pyfunc(<the downloaded folder>, model_config)  ->  VersionModel
    VersionModel.predict(pd.DataFrame({"text": [...]}))  ->  one row per text, the columns the version's kind names
                                                            (classification: label, confidence, prob_<label>...)

Loading checks the adapter's files against the digest recorded in the config (the folder's other files are MLflow's),
resolves the base from its package (or path) as serving does, refuses a base with another fingerprint, and attaches
the adapter on it with `PrefixPool`: the answers are the server's. This module imports no MLflow.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformers.utils import logging as transformers_logging

from prefix_registry.errors import AdapterError, DataError
from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.engine import head_outputs
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.kinds.registry import kind_named
from prefix_registry.settings import Settings
from prefix_registry.training.adapter_integrity import verify_packaged_adapter

TEXT_COLUMN = "text"
BATCH_SIZE = 32  # the server's batch size (serving's pool calls): the same batches, the same padding


@dataclass(frozen=True)
class PyfuncConfig:
    """What the loader needs beyond the folder, kept as the pyfunc's model config in `MLmodel`.

    `adapter_digest` and `adapter_files`: the adapter's folder digest and file list, as the registry recorded them
    (adapter_integrity.py); `kind`: the version's task kind; `task` and `run_id` (the run that logged the files,
    known before MLflow numbers the version) name the attached prefix.
    """

    task: str
    run_id: str
    kind: str
    adapter_digest: str
    adapter_files: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "adapter_files": list(self.adapter_files)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> PyfuncConfig:
        """The config read back from `MLmodel`; AdapterError naming what is missing when it is not one."""
        values = values or {}
        missing = [name for name in ("task", "run_id", "adapter_digest", "adapter_files") if not values.get(name)]
        if missing:
            raise AdapterError(
                f"the MLflow model's config lacks {', '.join(missing)}; expected the config prefix-registry writes "
                f"(got keys {sorted(values)})"
            )
        return cls(
            task=str(values["task"]),
            run_id=str(values["run_id"]),
            kind=str(values.get("kind") or ""),
            adapter_digest=str(values["adapter_digest"]),
            adapter_files=tuple(str(name) for name in values["adapter_files"]),
        )


class VersionModel:
    """One version attached to its resident base; `predict` is what MLflow's pyfunc calls."""

    def __init__(self, pool: PrefixPool, attached: AttachedPrefix) -> None:
        self.pool = pool
        self.attached = attached

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per text of `model_input` (a DataFrame with a `text` column, a Series or a list of strings), with
        the columns the version's kind answers with as a model (`TaskKind.model_columns`)."""
        texts = input_texts(model_input)
        attached = self.attached
        outputs = head_outputs(attached, texts, batch_size=BATCH_SIZE).numpy()
        return pd.DataFrame(attached.kind.model_columns(outputs, attached.labels))


def input_texts(model_input: Any) -> list[str]:
    """The texts of a pyfunc input; DataError saying what was expected otherwise."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise DataError(f"expected a {TEXT_COLUMN!r} column, got columns {list(model_input.columns)}")
        values: Sequence[Any] = model_input[TEXT_COLUMN].tolist()
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, Sequence) and not isinstance(model_input, str | bytes):
        values = list(model_input)
    else:
        raise DataError(
            f"expected a DataFrame with a {TEXT_COLUMN!r} column or a list of texts, got {type(model_input)}"
        )
    wrong = [type(value).__name__ for value in values if not isinstance(value, str)]
    if wrong:
        raise DataError(f"expected every text to be a string, got {', '.join(sorted(set(wrong)))}")
    return [str(value) for value in values]


def load_version_model(folder: Path, config: PyfuncConfig, pool: PrefixPool | None = None) -> VersionModel:
    """Verify the adapter in `folder` against `config` and attach it to its base (in `pool`, else a new pool)."""
    verified = verify_packaged_adapter(folder, config.adapter_digest, config.adapter_files)
    pool = pool or PrefixPool(Settings().resolved_cache_dir)
    with _quiet_base_load():
        attached = pool.attach(config.task, f"run {config.run_id}", folder, verified.manifest, kind_named(config.kind))
    return VersionModel(pool, attached)


@contextmanager
def _quiet_base_load() -> Iterator[None]:
    """Without transformers' report that the base's head is "MISSING" (the adapter brings the trained one) and its
    progress bar; the caller's own settings are put back after (a library loader changes no global for good)."""
    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> VersionModel:
    """MLflow's entry point for a custom loader module: the model folder (`path`) and `MLmodel`'s config."""
    return load_version_model(Path(path), PyfuncConfig.from_dict(model_config))
