"""The MLflow gateway: every MLflow call of prefix-registry, and the one place MLflow's errors are translated.

    registry services (PrefixRegistry, AliasMover, runs.py, training_runs.py, sweeps.py)
        --> MlflowGateway (tasks, experiments, versions, aliases, runs, metrics, artifacts, datasets, and the
                          MLflow model files of a version: `save_pyfunc_model`)
        --> MlflowClient (tracking and model registry; SQLite, a tracking server, S3)

A task is a registered model tagged `prefix_registry.task` with an experiment `prefix-registry/<task>` for its
training runs and `prefix-registry/<task>/monitoring` for its monitoring runs (`ExperimentPurpose`); both are tagged
as machine-learning experiments (`mlflow.experimentKind`), so MLflow's UI treats them as runs, not GenAI traces.
Methods return MLflow's own entities (a registered model, a model version, a run) for the services to read; what
fails reaches them as a one-line `RegistryError`: "not found" as such, an unreachable tracking server or artifact
store as `RegistryUnavailable`. Other MLflow errors pass unchanged (the CLI prints those as one line too).
No module outside this one imports `mlflow` (tests/test_gateway.py checks it).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from prefix_registry.errors import RegistryError, RegistryUnavailable, first_line, mask_credentials
from prefix_registry.settings import Settings

TASK_TAG = "prefix_registry.task"
EXPERIMENT_PREFIX = "prefix-registry/"
EXPERIMENT_PURPOSE_TAG = "prefix_registry.experiment"
# What MLflow's UI reads as an experiment's kind: "custom_model_development" is its "Machine learning" kind (runs,
# models), against "genai_development" (traces). MLflow 3.17's UI picks its landing tab from the workflow type in the
# address (`?workflowType=machine_learning`, see `ui_links.py`) or the browser's last choice, and shows this kind in
# the experiment's header; earlier 3.x UIs choose the landing tab from it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MACHINE_LEARNING_KIND = "custom_model_development"
# MLflow takes at most 100 params and 1000 metrics per batch.
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 500


class ExperimentPurpose(StrEnum):
    """Which of a task's two experiments: its training runs (versions, sweeps) or its monitoring runs (verdicts)."""

    TRAINING = "training"
    MONITORING = "monitoring"

    def experiment_name(self, task: str) -> str:
        """`prefix-registry/<task>` or `prefix-registry/<task>/monitoring` (a task name holds no `/`)."""
        return EXPERIMENT_PREFIX + task + ("" if self is ExperimentPurpose.TRAINING else f"/{self.value}")

    def artifact_folder(self, task: str) -> str:
        """The experiment's folder under the artifact root: `<task>` or `<task>/monitoring`."""
        return task if self is ExperimentPurpose.TRAINING else f"{task}/{self.value}"


class RunStatus(StrEnum):
    """How an MLflow run ended (or that it still runs)."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


@dataclass(frozen=True)
class RunDataset:
    """One dataset input of a run: a named, digested set of rows and the roles (`context`) it was used in."""

    name: str
    digest: str
    source_type: str
    source: str
    schema: str
    profile: str
    context: str


class MlflowGateway:
    """MLflow's tracking and registry stores, reached through one lazily opened client.

    Example:
        gateway = MlflowGateway(Settings())
        model = gateway.task_model("sentiment")  # None when there is no such registered model
        gateway.set_alias("sentiment", "champion", "3")
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None

    @property
    def _shown_tracking_uri(self) -> str:
        """The tracking URI as messages may print it: its password masked."""
        return mask_credentials(self.settings.resolved_tracking_uri)

    @property
    def _mlflow(self) -> Any:
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
    def _translated(self, what: str) -> Iterator[None]:
        """Translate MLflow's exceptions raised in the block into one-line registry errors naming `what`."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as error:
            code = getattr(error, "error_code", "")
            if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise RegistryError(f"{what}: not found ({first_line(error)})") from None
            if "API request" in str(error) or "Max retries" in str(error) or code == "TEMPORARILY_UNAVAILABLE":
                raise RegistryUnavailable(
                    f"MLflow at {self._shown_tracking_uri} is unreachable while trying to {what}"
                ) from None
            raise

    def ping(self) -> None:
        """Raise RegistryUnavailable unless the tracking server answers."""
        try:
            with self._translated("reach the registry"):
                self._mlflow.search_experiments(max_results=1)
        except RegistryUnavailable:
            raise
        except Exception as error:
            raise RegistryUnavailable(
                f"MLflow at {self._shown_tracking_uri} is unreachable: {first_line(error)}"
            ) from None

    # -- tasks: registered models -------------------------------------------------------------------------------
    def task_model(self, task: str) -> Any | None:
        """The registered model named `task` (tags, aliases, description), or None when there is none."""
        with self._translated(f"read task {task}"):
            try:
                return self._mlflow.get_registered_model(task)
            except Exception as error:
                if _does_not_exist(error):
                    return None
                raise

    def create_task_model(self, task: str, tags: dict[str, str], description: str) -> None:
        """Create the registered model `task` unless it exists (then it is left as it is)."""
        with self._translated(f"create task {task}"):
            try:
                self._mlflow.get_registered_model(task)
            except Exception as error:
                if not _does_not_exist(error):
                    raise
                self._mlflow.create_registered_model(task, tags=tags, description=description)

    def task_models(self) -> list[Any]:
        """Every registered model tagged as a prefix-registry task."""
        with self._translated("list tasks"):
            return list(self._mlflow.search_registered_models(filter_string=f"tags.`{TASK_TAG}` = 'true'"))

    def set_task_tag(self, task: str, key: str, value: str, *, what: str | None = None) -> None:
        """Tag the registered model `task`. `what` names the action in errors (default "tag task TASK")."""
        with self._translated(what or f"tag task {task}"):
            self._mlflow.set_registered_model_tag(task, key, value)

    def delete_task_tag(self, task: str, key: str, *, what: str | None = None) -> None:
        """Remove one tag of the registered model `task`."""
        with self._translated(what or f"untag task {task}"):
            self._mlflow.delete_registered_model_tag(task, key)

    def set_task_description(self, task: str, description: str) -> None:
        with self._translated(f"describe task {task}"):
            self._mlflow.update_registered_model(task, description=description)

    def set_alias(self, task: str, alias: str, version: str, *, what: str | None = None) -> None:
        """Point `alias` of `task` at `version`. `what` names the action in errors."""
        with self._translated(what or f"point alias {alias} of {task} at version {version}"):
            self._mlflow.set_registered_model_alias(task, alias, version)

    def task_experiment_id(self, task: str, purpose: ExperimentPurpose = ExperimentPurpose.TRAINING) -> str:
        """The id of the task's experiment for `purpose`, created with its artifact folder if missing; an experiment
        created before experiments were tagged as machine learning gets the tag when it is opened."""
        name = purpose.experiment_name(task)
        with self._translated(f"open experiment {name}"):
            experiment = self._mlflow.get_experiment_by_name(name)
            if experiment is not None:
                experiment_id = str(experiment.experiment_id)
                if (experiment.tags or {}).get(EXPERIMENT_KIND_TAG) != MACHINE_LEARNING_KIND:
                    self._mlflow.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MACHINE_LEARNING_KIND)
                return experiment_id
            root = self.settings.resolved_artifact_root
            tags = {TASK_TAG: task, EXPERIMENT_PURPOSE_TAG: purpose.value, EXPERIMENT_KIND_TAG: MACHINE_LEARNING_KIND}
            return str(
                self._mlflow.create_experiment(
                    name, artifact_location=f"{root}/{purpose.artifact_folder(task)}" if root else None, tags=tags
                )
            )

    def experiment(self, experiment_id: str) -> Any:
        """The experiment (name, artifact location, tags)."""
        with self._translated(f"read experiment {experiment_id}"):
            return self._mlflow.get_experiment(experiment_id)

    # -- model versions -----------------------------------------------------------------------------------------
    def create_version(
        self, task: str, source: str, run_id: str | None, tags: dict[str, str] | None = None, description: str = ""
    ) -> Any:
        """A new model version of `task` whose files are `source` (a run's artifact folder)."""
        with self._translated(f"register a version of {task}"):
            return self._mlflow.create_model_version(
                name=task, source=source, run_id=run_id, tags=tags, description=description
            )

    def task_versions(self, task: str) -> list[Any]:
        """Every model version of `task`, in MLflow's order."""
        with self._translated(f"list versions of {task}"):
            return list(self._mlflow.search_model_versions(f"name = '{task}'"))

    def model_version(self, task: str, version: str) -> Any | None:
        """Version `version` of `task`, or None when there is none."""
        with self._translated(f"read version {version} of {task}"):
            try:
                return self._mlflow.get_model_version(task, version)
            except Exception as error:
                if _does_not_exist(error):
                    return None
                raise

    def set_version_tags(self, task: str, version: str, tags: dict[str, str]) -> None:
        with self._translated(f"tag version {version} of {task}"):
            for key, value in tags.items():
                self._mlflow.set_model_version_tag(task, version, key, value)

    def delete_version_tag(self, task: str, version: str, key: str) -> None:
        with self._translated(f"untag version {version} of {task}"):
            self._mlflow.delete_model_version_tag(task, version, key)

    def set_version_description(self, task: str, version: str, description: str) -> None:
        with self._translated(f"describe version {version} of {task}"):
            self._mlflow.update_model_version(task, version, description=description)

    # -- runs ---------------------------------------------------------------------------------------------------
    def create_run(
        self, experiment_id: str, run_name: str | None = None, tags: dict[str, str] | None = None, *, what: str = ""
    ) -> Any:
        """A new RUNNING run in the experiment. `what` names the action in errors."""
        with self._translated(what or f"start a run in experiment {experiment_id}"):
            return self._mlflow.create_run(experiment_id, run_name=run_name, tags=tags)

    def run(self, run_id: str) -> Any:
        """The run (info, data.params/metrics/tags, inputs)."""
        with self._translated(f"read run {run_id}"):
            return self._mlflow.get_run(run_id)

    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        *,
        max_results: int = 1000,
        newest_first: bool = False,
        what: str = "",
    ) -> list[Any]:
        """The runs of the experiments matching MLflow's `filter_string`; `what` names the action in errors."""
        order_by = ["attributes.start_time DESC"] if newest_first else None
        with self._translated(what or f"search the runs of experiments {', '.join(experiment_ids)}"):
            return list(
                self._mlflow.search_runs(
                    experiment_ids, filter_string=filter_string, order_by=order_by, max_results=max_results
                )
            )

    def set_run_tags(self, run_id: str, tags: dict[str, str], *, what: str | None = None) -> None:
        """Tag a run (even a finished one)."""
        with self._translated(what or f"tag run {run_id}"):
            for key, value in tags.items():
                self._mlflow.set_tag(run_id, key, value)

    def end_run(self, run_id: str, status: RunStatus, *, what: str | None = None) -> None:
        """Close a run with `status`."""
        with self._translated(what or f"close run {run_id}"):
            self._mlflow.set_terminated(run_id, status.value)

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, value) for key, value in params.items()]
        with self._translated(f"log params to run {run_id}"):
            for start in range(0, len(entries), PARAMS_PER_BATCH):
                self._mlflow.log_batch(run_id, params=entries[start : start + PARAMS_PER_BATCH])

    def log_metrics(
        self, run_id: str, metrics: dict[str, float], step: int = 0, timestamp_ms: int | None = None
    ) -> None:
        """Log metrics at `step`, stamped `timestamp_ms` (epoch milliseconds; default now), to a run even finished."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        with self._translated(f"log metrics to run {run_id}"):
            for start in range(0, len(entries), METRICS_PER_BATCH):
                self._mlflow.log_batch(run_id, metrics=entries[start : start + METRICS_PER_BATCH])

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        """Every logged value of metric `key` of a run (`.value`, `.step`, `.timestamp`)."""
        with self._translated(f"read metric {key} of run {run_id}"):
            return list(self._mlflow.get_metric_history(run_id, key))

    def log_datasets(self, run_id: str, datasets: list[RunDataset]) -> None:
        """Record dataset inputs on a run (the MLflow UI's "Datasets used"), each with its roles as context."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = [
            DatasetInput(
                dataset=Dataset(
                    name=d.name,
                    digest=d.digest,
                    source_type=d.source_type,
                    source=d.source,
                    schema=d.schema,
                    profile=d.profile,
                ),
                tags=[InputTag(MLFLOW_DATASET_CONTEXT, d.context)],
            )
            for d in datasets
        ]
        with self._translated(f"log datasets to run {run_id}"):
            self._mlflow.log_inputs(run_id, datasets=inputs)

    @staticmethod
    def run_dataset_contexts(run: Any, source_type: str) -> list[tuple[str, str]]:
        """(context, digest) of each dataset input of `run` (from `run(...)`) whose source type is `source_type`."""
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        found = []
        for dataset_input in getattr(run.inputs, "dataset_inputs", None) or []:
            if dataset_input.dataset.source_type != source_type:
                continue
            context = next((t.value for t in dataset_input.tags if t.key == MLFLOW_DATASET_CONTEXT), "")
            found.append((context, dataset_input.dataset.digest))
        return found

    # -- artifacts ----------------------------------------------------------------------------------------------
    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Write one text artifact (a JSON file, an HTML card) into a run."""
        with self._translated(f"write {artifact_file} to run {run_id}"):
            self._mlflow.log_text(run_id, text, artifact_file)

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
        """Upload the files of `local_dir` into the run's `artifact_path` folder."""
        with self._translated(f"upload artifacts of run {run_id}"):
            self._mlflow.log_artifacts(run_id, str(local_dir), artifact_path)

    def download_artifacts(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        """Download one artifact folder/file of a run into `destination` (created); returns the local path.

        Raises RegistryError when it cannot be written locally or is not there, RegistryUnavailable when the
        artifact store is out of reach.
        """
        destination.mkdir(parents=True, exist_ok=True)
        what = f"download {artifact_path} of run {run_id}"
        with self._translated(what):
            try:
                local = self._mlflow.download_artifacts(run_id, artifact_path, str(destination))
            except OSError as error:
                raise RegistryError(f"cannot {what}: {error}") from None
            except Exception as error:
                if _does_not_exist(error):
                    self._require_artifact_store(run_id, artifact_path, what)
                raise
        return Path(local)

    def _require_artifact_store(self, run_id: str, artifact_path: str, what: str) -> None:
        """Raise RegistryUnavailable when the run's artifacts cannot even be listed.

        MLflow's download answers "not found" whatever failed (it swallows the cause), so an S3 that is down would
        read as files that were never there; a listing that fails too says the store is out of reach.
        """
        try:
            self._mlflow.list_artifacts(run_id, artifact_path)
        except Exception as error:
            if _does_not_exist(error):
                return  # the run itself is gone: "not found" is the truth
            raise RegistryUnavailable(
                f"the artifact store of MLflow at {self._shown_tracking_uri} is unreachable while trying "
                f"to {what}: {first_line(error)}"
            ) from None

    def list_artifacts(self, run_id: str, artifact_path: str | None = None) -> list[str]:
        """The paths of the run's artifacts directly under `artifact_path` (the root by default)."""
        with self._translated(f"list the artifacts of run {run_id}"):
            return [info.path for info in self._mlflow.list_artifacts(run_id, artifact_path)]

    # -- webhooks (MLflow >= 3.3; delivered by a tracking server on a SQL store) ----------------------------------
    def create_webhook(self, name: str, url: str, events: list[str], secret: str, description: str) -> str:
        """Register a webhook that MLflow POSTs to `url` on `events` (e.g. `model_version_alias.created`), signed
        with `secret`; returns its id."""
        with self._translated(f"register the MLflow webhook {name} for {url}"):
            return str(
                self._mlflow.create_webhook(
                    name=name, url=url, events=events, secret=secret, description=description
                ).webhook_id
            )

    def delete_webhook(self, webhook_id: str) -> None:
        with self._translated(f"delete the MLflow webhook {webhook_id}"):
            self._mlflow.delete_webhook(webhook_id)


@dataclass(frozen=True)
class PyfuncSpec:
    """An MLflow pyfunc model whose code is an installed module, not a pickle: MLflow loads it by calling
    `<loader_module>._load_pyfunc(<the model's folder>, model_config)` (MLflow's "custom loader module" form).

    `inputs` and `outputs` are the signature's columns (name -> MLflow column type: string, double, long, boolean);
    `input_example` a small frame of inputs; `pip_requirements` pinned `name==version` lines; `metadata` what the
    MLmodel file shows people.
    """

    loader_module: str
    model_config: dict[str, Any]
    inputs: dict[str, str]
    outputs: dict[str, str]
    input_example: Any
    pip_requirements: list[str]
    metadata: dict[str, Any]


def save_pyfunc_model(path: Path, spec: PyfuncSpec) -> list[str]:
    """Write the MLflow model files of `spec` (MLmodel, environment files, input example) into the new folder `path`;
    returns their names, relative to `path`. Nothing reaches a tracking server: the caller uploads the folder."""
    from mlflow.models.signature import ModelSignature
    from mlflow.pyfunc import save_model
    from mlflow.types.schema import ColSpec, Schema

    def schema(columns: dict[str, str]) -> Schema:
        return Schema([ColSpec(type=kind, name=name) for name, kind in columns.items()])

    # Its INFO lines ("Validating input example against model signature") would land in `prefixctl train`'s output.
    mlflow_logger = logging.getLogger("mlflow")
    level = mlflow_logger.level
    mlflow_logger.setLevel(max(level, logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="no-uv-project-") as no_project:
        try:
            save_model(
                path=str(path),
                loader_module=spec.loader_module,
                model_config=spec.model_config,
                signature=ModelSignature(inputs=schema(spec.inputs), outputs=schema(spec.outputs)),
                input_example=spec.input_example,
                pip_requirements=spec.pip_requirements,
                metadata=spec.metadata,
                # MLflow would otherwise copy the uv.lock and pyproject.toml of whatever folder the process runs in:
                # a version's model holds what the version needs, and the same files wherever it was trained.
                uv_project_path=no_project,
            )
        finally:
            mlflow_logger.setLevel(level)
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def _does_not_exist(error: BaseException) -> bool:
    """Whether `error` is MLflow's answer that the model, version or run asked for does not exist."""
    from mlflow.exceptions import MlflowException

    return isinstance(error, MlflowException) and error.error_code == "RESOURCE_DOES_NOT_EXIST"
