"""The registry: tasks, their versions and aliases, and their artifacts, as one facade over three services.

    PrefixRegistry --> MlflowGateway (gateway.py: every MLflow call, errors translated once)
                   --> AliasMover    (alias_mover.py: promote / rollback under the alias lock, history first)
                   --> baseline gate (baseline_gate.py: a champion beats its linear probe, used by the mover)

A task is a registered model (tagged `prefix_registry.task`) with an experiment of the same name for its training
runs and one for its monitoring runs (`ExperimentPurpose`).
Each trained adapter is a model version whose source is the run's `adapter/` artifact folder; aliases
(`champion`, `challenger`) name the versions that serve; their moves are recorded in the project's database
(alias_history_store.py) and shown in the model's description.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefix_registry.errors import (
    AliasNotSet,
    InvalidTaskName,
    RegistryError,
    RegistryUnavailable,
    TaskNotFound,
    VersionNotFound,
)
from prefix_registry.registry.alias_lock import AliasLock
from prefix_registry.registry.alias_mover import ALIAS_NAME, AliasChange, AliasMover
from prefix_registry.registry.aliases import CHAMPION, AliasEvent
from prefix_registry.registry.failpoints import REGISTER_BEFORE_VERSION, failpoint
from prefix_registry.registry.gateway import (
    EXPERIMENT_PREFIX,
    TASK_TAG,
    ExperimentPurpose,
    MlflowGateway,
    RunDataset,
)
from prefix_registry.registry.promotion_check import check_promotable
from prefix_registry.registry.regimes import refresh_on_alias_move
from prefix_registry.registry.rollouts import Rollouts
from prefix_registry.registry.versions import PrefixVersion, has_metric_tags
from prefix_registry.settings import Settings

__all__ = [
    "ALIAS_NAME",
    "EXPERIMENT_PREFIX",
    "TASK_NAME",
    "TASK_TAG",
    "AliasChange",
    "ExperimentPurpose",
    "PrefixRegistry",
    "validate_task_name",
]

# Checked with fullmatch: `$` also matches before a trailing newline, and a name becomes a path, a tag and a key.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def validate_task_name(task: str) -> str:
    if not TASK_NAME.fullmatch(task or ""):
        raise InvalidTaskName(
            f"invalid task name {task!r}: expected 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return task


class PrefixRegistry:
    """Versions, aliases, lineage and artifacts of every task, backed by MLflow.

    `gateway` is the MLflow gateway (for the registry's own modules: runs.py, training_runs.py, sweeps.py);
    `alias_mover` moves aliases and tells `alias_observers` (the same list) of each move.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.gateway = MlflowGateway(self.settings)
        self.alias_mover = AliasMover(self.gateway, self, self.settings)
        # Every alias target must verify and load before the alias moves (promotion_check.py).
        self.alias_mover.promotion_check = lambda version, alias: check_promotable(self, version, alias)
        # Comparison cards say where aliases point and what was rolled back: rewritten after each move.
        self.alias_mover.describe_cards = self._refresh_comparison_cards
        # A regime's champion move rewrites its task's readable `regimes` tag (regimes.py).
        self.alias_observers.append(lambda change: refresh_on_alias_move(self, change))
        self._rollouts: Rollouts | None = None

    def _refresh_comparison_cards(self, change: AliasChange) -> None:
        from prefix_registry.registry.comparison_card import refresh_cards  # comparison.py imports this module

        refresh_cards(self, change)

    @property
    def alias_observers(self) -> list[Callable[[AliasChange], None]]:
        """Told of every alias move, after it is made: the layers above send alerts and events without this layer
        importing them (see alerts/alias_moves.py). Append to it; it is the mover's own list."""
        return self.alias_mover.observers

    def ping(self) -> None:
        """Raise RegistryUnavailable unless the tracking server answers."""
        self.gateway.ping()

    # -- tasks --------------------------------------------------------------------------------------------------
    def ensure_task(self, task: str, description: str | None = None) -> str:
        """Create the task's registered model and experiment if missing; return the experiment id."""
        validate_task_name(task)
        self.gateway.create_task_model(
            task,
            tags={TASK_TAG: "true"},
            description=description or f"Continuous-prompt adapters for task '{task}'.",
        )
        return self.experiment_id(task)

    def experiment_id(self, task: str, purpose: ExperimentPurpose = ExperimentPurpose.TRAINING) -> str:
        """The id of the task's training (default) or monitoring experiment, created if missing."""
        return self.gateway.task_experiment_id(task, purpose)

    def require_task(self, task: str) -> Any:
        """The task's registered model (tags, aliases, description); TaskNotFound when it is not a task."""
        validate_task_name(task)
        model = self.gateway.task_model(task)
        if model is None:
            known = ", ".join(self.tasks()) or "none yet"
            raise TaskNotFound(f"unknown task {task!r} (known tasks: {known})")
        if (model.tags or {}).get(TASK_TAG) != "true":
            raise TaskNotFound(f"registered model {task!r} exists but is not a prefix-registry task")
        return model

    def tasks(self) -> list[str]:
        return sorted(model.name for model in self.gateway.task_models())

    # -- versions -----------------------------------------------------------------------------------------------
    def register_version(
        self, task: str, run_id: str, artifact_uri: str, tags: dict[str, str], description: str
    ) -> PrefixVersion:
        """Make the run's `adapter/` artifact folder a new version of the task."""
        failpoint(REGISTER_BEFORE_VERSION)
        model_version = self.gateway.create_version(
            task, f"{artifact_uri.rstrip('/')}/adapter", run_id, tags=tags, description=description
        )
        return PrefixVersion.from_mlflow(model_version, aliases=[], run_metrics=self._run_metrics(model_version))

    def versions(self, task: str) -> list[PrefixVersion]:
        """Every version of a task, oldest first, with its aliases."""
        model = self.require_task(task)
        by_version = _aliases_by_version(model.aliases)
        found = self.gateway.task_versions(task)
        versions = [
            PrefixVersion.from_mlflow(mv, by_version.get(str(mv.version), []), self._run_metrics(mv)) for mv in found
        ]
        return sorted(versions, key=lambda v: int(v.version))

    def version(self, task: str, version: str | int) -> PrefixVersion:
        model = self.require_task(task)
        version = str(version)
        if not (version.isascii() and version.isdigit()):
            raise VersionNotFound(f"version must be a number, got {version!r}")
        model_version = self.gateway.model_version(task, version)
        if model_version is None:
            existing = [v.version for v in self.versions(task)]
            raise VersionNotFound(f"task {task!r} has no version {version} (versions: {', '.join(existing) or 'none'})")
        aliases = _aliases_by_version(model.aliases).get(version, [])
        return PrefixVersion.from_mlflow(model_version, aliases, self._run_metrics(model_version))

    def _run_metrics(self, model_version: Any) -> dict[str, float]:
        """The metrics of the version's run, unless the version carries `metric.*` score tags (then no run is read);
        empty when the run is gone."""
        if has_metric_tags(model_version.tags or {}) or not model_version.run_id:
            return {}
        try:
            return dict(self.gateway.run(model_version.run_id).data.metrics)
        except RegistryUnavailable:
            raise
        except RegistryError:
            return {}

    def resolve(self, task: str, version: str | int | None = None, alias: str | None = None) -> PrefixVersion:
        """The version named explicitly, else the one behind `alias` (default `champion`)."""
        if version is not None and alias is not None:
            raise RegistryError("give either a version or an alias, not both")
        if version is not None:
            return self.version(task, version)
        alias = alias or CHAMPION
        current = self.aliases(task).get(alias)
        if current is None:
            raise AliasNotSet(
                f"task {task!r} has no {alias!r} alias yet; promote a version first "
                f"(prefixctl promote {task} VERSION) or pass --version"
            )
        return self.version(task, current)

    def set_version_tags(self, task: str, version: str, tags: dict[str, str]) -> None:
        self.gateway.set_version_tags(task, str(version), tags)

    def set_version_description(self, task: str, version: str, description: str) -> None:
        self.gateway.set_version_description(task, str(version), description)

    # -- aliases ------------------------------------------------------------------------------------------------
    def aliases(self, task: str) -> dict[str, str]:
        model = self.require_task(task)
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def alias_history(self, task: str) -> list[AliasEvent]:
        """Every move of the task's aliases, oldest first (the history database's, and legacy tag entries)."""
        return self.alias_mover.history_of(task, self.require_task(task))

    def move_alias_history_out_of_tags(self, task: str) -> int:
        """Move legacy alias-history tags of the task into the history database (under the champion's lock);
        returns how many entries moved. The next alias move does the same by itself."""
        with self.alias_lock.hold(f"alias:{task}:{CHAMPION}"):
            return self.alias_mover.move_history_out_of_tags(task, self.require_task(task))

    def task_tags(self, task: str) -> dict[str, str]:
        return dict(self.require_task(task).tags or {})

    def set_task_tag(self, task: str, key: str, value: str) -> None:
        self.require_task(task)
        self.gateway.set_task_tag(task, key, value)

    def promote(
        self,
        task: str,
        version: str | int,
        alias: str = CHAMPION,
        reason: str | None = None,
        actor: str | None = None,
        force: bool = False,
    ) -> AliasChange:
        """Point `alias` at `version` and record the move. Promoting the current version changes nothing.

        A champion must beat its linear-probe baseline unless `force` (with a `reason`): see baseline_gate.py.
        """
        return self.alias_mover.promote(task, version, alias, reason, actor, force)

    def rollback(
        self,
        task: str,
        to: str | int | None = None,
        alias: str = CHAMPION,
        reason: str | None = None,
        actor: str | None = None,
    ) -> AliasChange:
        """Move `alias` back to its previous version (or to `to`), recording who, when and why."""
        return self.alias_mover.rollback(task, to, alias, reason, actor)

    @property
    def rollouts(self) -> Rollouts:
        """The tasks' running rollouts (rollouts.py): start, end, read; opened on first use."""
        if self._rollouts is None:
            self._rollouts = Rollouts(self)
        return self._rollouts

    @property
    def alias_lock(self) -> AliasLock:
        """The cross-process lock alias moves hold (`alias_lock.hold(f"alias:{task}:{alias}")`)."""
        return self.alias_mover.lock

    # -- runs and artifacts -------------------------------------------------------------------------------------
    def run(self, run_id: str) -> Any:
        return self.gateway.run(run_id)

    def runs(
        self,
        task: str,
        kind: str,
        filter_string: str = "",
        max_results: int = 20,
        purpose: ExperimentPurpose = ExperimentPurpose.TRAINING,
    ) -> list[Any]:
        """The task's runs of one kind (`train`, `monitor`) in its experiment for `purpose`, newest first."""
        query = f"tags.`prefix_registry.kind` = '{kind}'" + (f" and {filter_string}" if filter_string else "")
        return self.gateway.search_runs(
            [self.experiment_id(task, purpose)],
            query,
            max_results=max_results,
            newest_first=True,
            what=f"search {kind} runs of {task}",
        )

    def log_dataset_inputs(self, run_id: str, inputs: list[RunDataset]) -> None:
        """Record dataset inputs (`RunDataset`s, see eval_sets.py) on an existing run."""
        self.gateway.log_datasets(run_id, inputs)

    def log_run_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Write one text artifact (a JSON file, an HTML card) into an existing run."""
        self.gateway.log_text(run_id, text, artifact_file)

    def log_run_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Add metrics to an existing (even finished) run, e.g. a champion scored on a challenger's judge sets."""
        self.gateway.log_metrics(run_id, metrics, step=step)

    def log_run_params(self, run_id: str, params: dict[str, str]) -> None:
        """Add parameters to an existing run (each name once), e.g. a retrain's data sizes."""
        self.gateway.log_params(run_id, params)

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Tag an existing (even finished) run, e.g. a monitoring run with the retrain it caused."""
        self.gateway.set_run_tags(run_id, tags)

    def download_run_artifacts(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        """Download one artifact folder/file of a run into `destination` (created); returns the local path."""
        return self.gateway.download_artifacts(run_id, artifact_path, destination)

    def download_version_folder(self, version: PrefixVersion, artifact_path: str) -> Path:
        """A fresh local copy of one of a version's run folders (`adapter`, `checkpoint`, `reference`, `data`).

        Each call downloads anew into the cache (adapters are kilobytes), so a file damaged in the cache is never
        mistaken for the registry's.
        """
        target = self.settings.resolved_cache_dir / "versions" / version.task / version.version / artifact_path
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            local = self.download_run_artifacts(version.run_id, artifact_path, staging)
            if not local.exists():
                raise RegistryError(f"version {version.version} of {version.task} has no {artifact_path!r} artifacts")
            _move_into_place(local, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def _move_into_place(folder: Path, target: Path, attempts: int = 5) -> None:
    """Rename `folder` to `target`, unless `target` already holds the same bytes. Several processes of one cache
    (two servers told of the same promotion at once) may do this together: a copy equal to the one in place is left
    alone, so no process deletes files another one is reading; a different (damaged) one is renamed aside before it
    is deleted, and a rename that meets a folder another process just placed is tried again."""
    for attempt in range(1, attempts + 1):
        if _same_files(folder, target):
            return
        if target.exists():
            aside = target.with_name(f".old-{uuid.uuid4().hex}")
            with contextlib.suppress(FileNotFoundError):
                target.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        try:
            folder.rename(target)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == attempts:
                raise


def _same_files(fresh: Path, placed: Path) -> bool:
    """Whether `placed` holds exactly the files of `fresh`, byte for byte (False when either vanishes meanwhile)."""
    try:
        if fresh.is_file() or placed.is_file():
            return fresh.is_file() and placed.is_file() and filecmp.cmp(fresh, placed, shallow=False)
        if not placed.is_dir():
            return False
        names = sorted(path.relative_to(fresh) for path in fresh.rglob("*") if path.is_file())
        if names != sorted(path.relative_to(placed) for path in placed.rglob("*") if path.is_file()):
            return False
        return all(filecmp.cmp(fresh / name, placed / name, shallow=False) for name in names)
    except OSError:
        return False


def _aliases_by_version(aliases: dict[str, Any] | None) -> dict[str, list[str]]:
    by_version: dict[str, list[str]] = {}
    for alias, version in (aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    return by_version
