"""The registry: every MLflow call of prefix-registry goes through `PrefixRegistry`.

A task is a registered model (tagged `prefix_registry.task`) with an experiment of the same name for its runs.
Each trained adapter is a model version whose source is the run's `adapter/` artifact folder; aliases
(`champion`, `challenger`) name the versions that serve, and their moves are recorded in `aliases.py`'s history.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefix_registry.errors import (
    AliasNotSet,
    InvalidTaskName,
    NoRollbackHistory,
    RegistryError,
    RegistryUnavailable,
    TaskNotFound,
    VersionNotFound,
    first_line,
)
from prefix_registry.registry.alias_lock import AliasLock
from prefix_registry.registry.aliases import (
    CHAMPION,
    AliasEvent,
    history_from_tags,
    new_event,
    rollback_target,
)
from prefix_registry.registry.baseline_gate import admit_champion
from prefix_registry.registry.failpoints import ALIAS_MOVE_AFTER_HISTORY, REGISTER_BEFORE_VERSION, failpoint
from prefix_registry.registry.model_history import with_history
from prefix_registry.registry.version_notes import (
    REPROMOTED_HEADING,
    ROLLBACK_HEADING,
    repromotion_markdown,
    rollback_markdown,
    with_section,
    without_section,
)
from prefix_registry.registry.versions import (
    PROMOTED_THEN_ROLLED_BACK,
    TAG_RETRAIN_DECISION,
    TAG_ROLLED_BACK,
    PrefixVersion,
)
from prefix_registry.settings import Settings

logger = logging.getLogger(__name__)

TASK_TAG = "prefix_registry.task"
EXPERIMENT_PREFIX = "prefix-registry/"
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class AliasChange:
    """The result of a promotion or rollback, as printed by the CLI."""

    task: str
    alias: str
    from_version: str | None
    to_version: str
    event: AliasEvent

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "actor": self.event.actor,
            "at": self.event.at,
            "reason": self.event.reason,
        }


def validate_task_name(task: str) -> str:
    if not TASK_NAME.match(task or ""):
        raise InvalidTaskName(
            f"invalid task name {task!r}: expected 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return task


class PrefixRegistry:
    """Versions, aliases, lineage and artifacts of every task, backed by MLflow."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._client: Any = None
        # Told of every alias move, after it is made: the layer above sends alerts without this layer importing it
        # (see alerts/alias_moves.py).
        self.alias_observers: list[Callable[[AliasChange], None]] = []
        self._alias_lock: AliasLock | None = None

    # -- connection ---------------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            if self.settings.tracking_uri is None or self.settings.artifact_root is None:
                self.settings.ensure_home()
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # keeps `--json` stdout JSON
            for name in ("mlflow", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.settings.resolved_tracking_uri,
                registry_uri=self.settings.resolved_registry_uri,
            )
        return self._client

    @contextmanager
    def _mlflow_errors(self, what: str) -> Iterator[None]:
        """Translate MLflow's exceptions into one-line registry errors."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as error:
            code = getattr(error, "error_code", "")
            if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise RegistryError(f"{what}: not found ({first_line(error)})") from None
            if "API request" in str(error) or "Max retries" in str(error) or code == "TEMPORARILY_UNAVAILABLE":
                raise RegistryUnavailable(
                    f"MLflow at {self.settings.resolved_tracking_uri} is unreachable while trying to {what}"
                ) from None
            raise

    def ping(self) -> None:
        """Raise RegistryUnavailable unless the tracking server answers."""
        try:
            with self._mlflow_errors("reach the registry"):
                self.client.search_experiments(max_results=1)
        except RegistryUnavailable:
            raise
        except Exception as error:
            raise RegistryUnavailable(
                f"MLflow at {self.settings.resolved_tracking_uri} is unreachable: {first_line(error)}"
            ) from None

    # -- tasks --------------------------------------------------------------------------------------------------
    def ensure_task(self, task: str, description: str | None = None) -> str:
        """Create the task's registered model and experiment if missing; return the experiment id."""
        validate_task_name(task)
        from mlflow.exceptions import MlflowException

        with self._mlflow_errors(f"create task {task}"):
            try:
                self.client.get_registered_model(task)
            except MlflowException as error:
                if getattr(error, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    raise
                self.client.create_registered_model(
                    task,
                    tags={TASK_TAG: "true"},
                    description=description or f"Continuous-prompt adapters for task '{task}'.",
                )
            return self.experiment_id(task)

    def experiment_id(self, task: str) -> str:
        name = EXPERIMENT_PREFIX + task
        with self._mlflow_errors(f"open experiment {name}"):
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            root = self.settings.resolved_artifact_root
            return self.client.create_experiment(
                name, artifact_location=f"{root}/{task}" if root else None, tags={TASK_TAG: task}
            )

    def require_task(self, task: str) -> Any:
        validate_task_name(task)
        from mlflow.exceptions import MlflowException

        with self._mlflow_errors(f"read task {task}"):
            try:
                model = self.client.get_registered_model(task)
            except MlflowException as error:
                if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                    known = ", ".join(self.tasks()) or "none yet"
                    raise TaskNotFound(f"unknown task {task!r} (known tasks: {known})") from None
                raise
        if (model.tags or {}).get(TASK_TAG) != "true":
            raise TaskNotFound(f"registered model {task!r} exists but is not a prefix-registry task")
        return model

    def tasks(self) -> list[str]:
        with self._mlflow_errors("list tasks"):
            models = self.client.search_registered_models(filter_string=f"tags.`{TASK_TAG}` = 'true'")
        return sorted(model.name for model in models)

    # -- versions -----------------------------------------------------------------------------------------------
    def register_version(
        self, task: str, run_id: str, artifact_uri: str, tags: dict[str, str], description: str
    ) -> PrefixVersion:
        """Make the run's `adapter/` artifact folder a new version of the task."""
        failpoint(REGISTER_BEFORE_VERSION)
        with self._mlflow_errors(f"register a version of {task}"):
            model_version = self.client.create_model_version(
                name=task,
                source=f"{artifact_uri.rstrip('/')}/adapter",
                run_id=run_id,
                tags=tags,
                description=description,
            )
        return PrefixVersion.from_mlflow(model_version, aliases=[])

    def versions(self, task: str) -> list[PrefixVersion]:
        """Every version of a task, oldest first, with its aliases."""
        model = self.require_task(task)
        by_version = _aliases_by_version(model.aliases)
        with self._mlflow_errors(f"list versions of {task}"):
            found = self.client.search_model_versions(f"name = '{task}'")
        versions = [PrefixVersion.from_mlflow(mv, by_version.get(str(mv.version), [])) for mv in found]
        return sorted(versions, key=lambda v: int(v.version))

    def version(self, task: str, version: str | int) -> PrefixVersion:
        model = self.require_task(task)
        version = str(version)
        if not version.isdigit():
            raise VersionNotFound(f"version must be a number, got {version!r}")
        from mlflow.exceptions import MlflowException

        with self._mlflow_errors(f"read version {version} of {task}"):
            try:
                model_version = self.client.get_model_version(task, version)
            except MlflowException as error:
                if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                    existing = [v.version for v in self.versions(task)]
                    raise VersionNotFound(
                        f"task {task!r} has no version {version} (versions: {', '.join(existing) or 'none'})"
                    ) from None
                raise
        return PrefixVersion.from_mlflow(model_version, _aliases_by_version(model.aliases).get(version, []))

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
        with self._mlflow_errors(f"tag version {version} of {task}"):
            for key, value in tags.items():
                self.client.set_model_version_tag(task, str(version), key, value)

    def set_version_description(self, task: str, version: str, description: str) -> None:
        with self._mlflow_errors(f"describe version {version} of {task}"):
            self.client.update_model_version(task, str(version), description=description)

    # -- aliases ------------------------------------------------------------------------------------------------
    def aliases(self, task: str) -> dict[str, str]:
        model = self.require_task(task)
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def alias_history(self, task: str) -> list[AliasEvent]:
        return history_from_tags(self.require_task(task).tags or {})

    def task_tags(self, task: str) -> dict[str, str]:
        return dict(self.require_task(task).tags or {})

    def set_task_tag(self, task: str, key: str, value: str) -> None:
        self.require_task(task)
        with self._mlflow_errors(f"tag task {task}"):
            self.client.set_registered_model_tag(task, key, value)

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
        reason = admit_champion(self.version(task, version), alias, reason, force, self.settings)
        return self._announce(self._move_alias(task, str(version), alias, "promote", reason, actor))

    def rollback(
        self,
        task: str,
        to: str | int | None = None,
        alias: str = CHAMPION,
        reason: str | None = None,
        actor: str | None = None,
    ) -> AliasChange:
        """Move `alias` back to its previous version (or to `to`), recording who, when and why."""

        def choose(current: str | None, history: list[AliasEvent]) -> str:
            # Chosen under the alias lock: two rollbacks at once walk back two steps, not the same one twice.
            target = str(to) if to is not None else rollback_target(history, alias, current)
            if target is None:
                raise NoRollbackHistory(
                    f"task {task!r}: alias {alias!r} has no earlier version to roll back to "
                    f"(currently {current or 'unset'}); use --to VERSION to choose one"
                )
            if target == current:
                raise RegistryError(f"task {task!r}: alias {alias!r} already points to version {target}")
            return target

        return self._announce(self._move_alias(task, None, alias, "rollback", reason, actor, choose=choose))

    def _announce(self, change: AliasChange) -> AliasChange:
        if change.from_version != change.to_version:  # promoting the current version moved nothing
            for observer in self.alias_observers:
                observer(change)
        return change

    @property
    def alias_lock(self) -> AliasLock:
        if self._alias_lock is None:
            if self.settings.lock_url is None and not (self.settings.prediction_log_url or "").startswith("postgres"):
                self.settings.ensure_home()
            self._alias_lock = AliasLock(self.settings.resolved_lock_url, self.settings.lock_timeout_s)
        return self._alias_lock

    def _move_alias(
        self,
        task: str,
        version: str | None,
        alias: str,
        action: str,
        reason: str | None,
        actor: str | None,
        choose: Callable[[str | None, list[AliasEvent]], str] | None = None,
    ) -> AliasChange:
        """Move `alias` under the task's alias lock: read, decide, write the history entry, then the alias.

        The entry is written first, so a mover killed between the two writes leaves an entry whose alias move is
        missing; the next move of that alias (any process) sees the alias still on the entry's `from_version` and
        completes it before doing its own. So the alias always ends equal to the last entry, one entry per move.
        """
        if not ALIAS_NAME.match(alias):
            raise RegistryError(
                f"invalid alias {alias!r}: expected letters, digits, '_' or '-', starting with a letter"
            )
        if version is not None:
            self.version(task, version)  # refuses a version that does not exist, before anything changes
        with self.alias_lock.hold(f"alias:{task}:{alias}"):
            model = self.require_task(task)
            current = (model.aliases or {}).get(alias)
            current = str(current) if current is not None else None
            history = history_from_tags(model.tags or {})
            current = self._complete_interrupted_move(task, alias, current, history)
            target = choose(current, history) if choose is not None else str(version)
            event = new_event(history, alias, action, current, target, actor or self.settings.actor, reason)
            if current == target and action == "promote":
                return AliasChange(task, alias, current, target, event)
            if choose is not None:
                self.version(task, target)
            self._write_with_retry(f"move alias {alias} of {task}", event, task, alias)
            change = AliasChange(task, alias, current, target, event)
            # Under the lock, so concurrent moves rewrite the history table in the order they were made.
            self._describe_move(change)
        logger.info("%s: %s %s %s -> %s", task, action, alias, current, target)
        return change

    def _describe_move(self, change: AliasChange) -> None:
        """Rebuild the model description's alias-history table; mark a rolled-back version as such, and clear the
        mark when that version is promoted to the same alias again.

        The move is already made: a failure here is logged, never raised (the history tags stay the record).
        """
        try:
            model = self.require_task(change.task)
            aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
            description = with_history(model.description or "", history_from_tags(model.tags or {}), aliases)
            self.client.update_registered_model(change.task, description=description)
            if change.event.action == "rollback" and change.from_version:
                self._mark_rolled_back(change)
            elif change.event.action == "promote":
                self._clear_rolled_back(change)
        except Exception as error:
            logger.warning("%s: alias moved, but its description was not updated: %s", change.task, first_line(error))

    def _mark_rolled_back(self, change: AliasChange) -> None:
        """The version an alias was rolled back from says so, in a tag and in its description."""
        task, version, event = change.task, str(change.from_version), change.event
        moved_off = self.client.get_model_version(task, version)
        tags = {TAG_ROLLED_BACK: f"from {change.alias} to v{change.to_version} at {event.at}"}
        if (moved_off.tags or {}).get(TAG_RETRAIN_DECISION) == "promoted":
            tags[TAG_RETRAIN_DECISION] = PROMOTED_THEN_ROLLED_BACK
        for key, value in tags.items():
            self.client.set_model_version_tag(task, version, key, value)
        note = rollback_markdown(change.alias, event.at, event.actor, event.reason, change.to_version)
        self.client.update_model_version(
            task, version, description=with_section(moved_off.description or "", note, ROLLBACK_HEADING)
        )

    def _clear_rolled_back(self, change: AliasChange) -> None:
        """A version promoted back to the alias it was rolled back from no longer says it was rolled back, in its
        tags or its description (the model's alias history keeps both moves)."""
        task, version, event = change.task, change.to_version, change.event
        promoted = self.client.get_model_version(task, version)
        tags = promoted.tags or {}
        if not tags.get(TAG_ROLLED_BACK, "").startswith(f"from {change.alias} "):
            return  # never rolled back, or off another alias
        self.client.delete_model_version_tag(task, version, TAG_ROLLED_BACK)
        if tags.get(TAG_RETRAIN_DECISION) == PROMOTED_THEN_ROLLED_BACK:
            self.client.set_model_version_tag(task, version, TAG_RETRAIN_DECISION, "promoted")
        note = repromotion_markdown(change.alias, event.at, event.actor, event.reason)
        description = without_section(promoted.description or "", ROLLBACK_HEADING)
        self.client.update_model_version(task, version, description=with_section(description, note, REPROMOTED_HEADING))

    def _complete_interrupted_move(
        self, task: str, alias: str, current: str | None, history: list[AliasEvent]
    ) -> str | None:
        """Finish a move whose history entry was written but whose alias was not (its mover died in between)."""
        last = next((event for event in reversed(history) if event.alias == alias), None)
        if last is None or current == last.to_version or current != last.from_version:
            return current  # consistent, or moved outside prefix-registry (kept as it is)
        logger.warning("%s: completing an interrupted %s of %s to %s", task, last.action, alias, last.to_version)
        self._with_retry(
            f"complete the move of {alias} of {task}",
            lambda: self.client.set_registered_model_alias(task, alias, last.to_version),
        )
        return last.to_version

    def _write_with_retry(self, what: str, event: AliasEvent, task: str, alias: str) -> None:
        self._with_retry(what, lambda: self.client.set_registered_model_tag(task, event.tag_key, event.to_tag_value()))
        failpoint(ALIAS_MOVE_AFTER_HISTORY)
        self._with_retry(what, lambda: self.client.set_registered_model_alias(task, alias, event.to_version))

    def _with_retry(self, what: str, call: Callable[[], Any], attempts: int = 4) -> None:
        """One MLflow write; a busy store ('database is locked' while another process trains) is retried, and
        what still fails is one line, never the store's internal message."""
        for attempt in range(1, attempts + 1):
            try:
                with self._mlflow_errors(what):
                    call()
                return
            except RegistryError:
                raise
            except Exception as error:
                if attempt == attempts:
                    raise RegistryError(f"cannot {what} after {attempts} attempts: {first_line(error)[:200]}") from None
                time.sleep(0.2 * 2**attempt)

    # -- runs and artifacts -------------------------------------------------------------------------------------
    def run(self, run_id: str) -> Any:
        with self._mlflow_errors(f"read run {run_id}"):
            return self.client.get_run(run_id)

    def runs(self, task: str, kind: str, filter_string: str = "", max_results: int = 20) -> list[Any]:
        """The task's runs of one kind (`train`, `monitor`), newest first."""
        query = f"tags.`prefix_registry.kind` = '{kind}'" + (f" and {filter_string}" if filter_string else "")
        with self._mlflow_errors(f"search {kind} runs of {task}"):
            return self.client.search_runs(
                [self.experiment_id(task)],
                filter_string=query,
                order_by=["attributes.start_time DESC"],
                max_results=max_results,
            )

    def log_dataset_inputs(self, run_id: str, inputs: list[Any]) -> None:
        """Record MLflow dataset inputs (`DatasetInput`s, see eval_sets.py) on an existing run."""
        with self._mlflow_errors(f"log datasets to run {run_id}"):
            self.client.log_inputs(run_id, datasets=inputs)

    def log_run_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Write one text artifact (a JSON file, an HTML card) into an existing run."""
        with self._mlflow_errors(f"write {artifact_file} to run {run_id}"):
            self.client.log_text(run_id, text, artifact_file)

    def log_run_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Add metrics to an existing (even finished) run, e.g. a champion scored on a challenger's judge sets."""
        import time as _time

        from mlflow.entities import Metric

        now = int(_time.time() * 1000)
        with self._mlflow_errors(f"log metrics to run {run_id}"):
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Tag an existing (even finished) run, e.g. a monitoring run with the retrain it caused."""
        with self._mlflow_errors(f"tag run {run_id}"):
            for key, value in tags.items():
                self.client.set_tag(run_id, key, value)

    def download_run_artifacts(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        """Download one artifact folder/file of a run into `destination` (created); returns the local path."""
        from mlflow.exceptions import MlflowException

        destination.mkdir(parents=True, exist_ok=True)
        what = f"download {artifact_path} of run {run_id}"
        with self._mlflow_errors(what):
            try:
                local = self.client.download_artifacts(run_id, artifact_path, str(destination))
            except OSError as error:
                raise RegistryError(f"cannot {what}: {error}") from None
            except MlflowException as error:
                if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                    self._require_artifact_store(run_id, artifact_path, what)
                raise
        return Path(local)

    def _require_artifact_store(self, run_id: str, artifact_path: str, what: str) -> None:
        """Raise RegistryUnavailable when the run's artifacts cannot even be listed.

        MLflow's download answers "not found" whatever failed (it swallows the cause), so an S3 that is down would
        read as files that were never there; a listing that fails too says the store is out of reach.
        """
        from mlflow.exceptions import MlflowException

        try:
            self.client.list_artifacts(run_id, artifact_path)
        except Exception as error:
            if isinstance(error, MlflowException) and error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return  # the run itself is gone: "not found" is the truth
            raise RegistryUnavailable(
                f"the artifact store of MLflow at {self.settings.resolved_tracking_uri} is unreachable while trying "
                f"to {what}: {first_line(error)}"
            ) from None

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
            if target.exists():
                shutil.rmtree(target)
            local.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def _aliases_by_version(aliases: dict[str, Any] | None) -> dict[str, list[str]]:
    by_version: dict[str, list[str]] = {}
    for alias, version in (aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    return by_version
