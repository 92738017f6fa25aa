"""A task's regime router as a versioned, promotable model: `TASK.router` in the registry.

    outcome = train_router(registry, "sentiment", frame, "text", "regime", promote=True)   # fit, measure, register
    found = router_champion(registry, "sentiment")        # (version, RouterModel) or None

Each version is a run of the task's training experiment (kind `router`) whose `router/router.json` artifact holds
the weights, the regime names, the fallback regime and its threshold (inference/router.py); the version records its
held-out accuracy and its parent (the champion when it was trained). The router model is not a task (no task tag):
it has no adapter to serve, so neither the serving table nor monitoring pick it up as one; serving reads it for the
task's regimes (serving/regime_routing.py).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prefix_registry.errors import AliasNotSet, DataError, InvalidRegime, VersionNotFound
from prefix_registry.inference.embedding import router_inputs
from prefix_registry.inference.resident import PrefixPool
from prefix_registry.inference.router import ROUTER_FILE, RouterFeatures, RouterModel
from prefix_registry.registry.aliases import CHAMPION
from prefix_registry.registry.regimes import ROUTER_SLOT, regime_model_name, regimes_of
from prefix_registry.registry.runs import RecordedRun
from prefix_registry.registry.versions import TAG_PARENT

if TYPE_CHECKING:
    import pandas as pd

    from prefix_registry.registry.store import PrefixRegistry

TAG_ROUTER_OF = "prefix_registry.router_of"  # on the router model: its task
ROUTER_FOLDER = "router"
RUN_KIND = "router"


def router_model_name(task: str) -> str:
    return f"{task}.{ROUTER_SLOT}"


@dataclass(frozen=True)
class RouterVersion:
    """One registered version of a task's router."""

    task: str
    version: str
    run_id: str
    regimes: list[str]
    accuracy: float | None
    parent_version: str | None
    aliases: list[str]

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": router_model_name(self.task),
            "version": self.version,
            "run_id": self.run_id,
            "regimes": self.regimes,
            "holdout_accuracy": self.accuracy,
            "parent_version": self.parent_version,
            "aliases": self.aliases,
        }


def router_versions(registry: PrefixRegistry, task: str) -> list[RouterVersion]:
    """Every version of the task's router, oldest first; empty when it has none."""
    name = router_model_name(task)
    model = registry.gateway.task_model(name)
    if model is None:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    found = []
    for mv in registry.gateway.task_versions(name):
        tags = mv.tags or {}
        found.append(
            RouterVersion(
                task=task,
                version=str(mv.version),
                run_id=str(mv.run_id),
                regimes=[r for r in tags.get("regimes", "").split(",") if r],
                accuracy=float(tags["holdout_accuracy"]) if "holdout_accuracy" in tags else None,
                parent_version=tags.get(TAG_PARENT),
                aliases=by_version.get(str(mv.version), []),
            )
        )
    return sorted(found, key=lambda v: int(v.version))


def load_router(registry: PrefixRegistry, task: str, version: str) -> RouterModel:
    """The router weights of `version` (downloaded from its run)."""
    found = next((v for v in router_versions(registry, task) if v.version == str(version)), None)
    if found is None:
        raise VersionNotFound(f"task {task!r} has no router version {version!r}")
    with tempfile.TemporaryDirectory(prefix="router-") as folder:
        local = registry.download_run_artifacts(found.run_id, f"{ROUTER_FOLDER}/{ROUTER_FILE}", Path(folder))
        return RouterModel.from_json(local.read_text(encoding="utf-8"))


def router_champion(registry: PrefixRegistry, task: str) -> tuple[str, RouterModel] | None:
    """(version, router) behind the router's `champion` alias; None when the task has no router champion."""
    model = registry.gateway.task_model(router_model_name(task))
    version = (model.aliases or {}).get(CHAMPION) if model is not None else None
    if version is None:
        return None
    return str(version), load_router(registry, task, str(version))


def promote_router(registry: PrefixRegistry, task: str, version: str) -> None:
    """Point the router's `champion` at `version`."""
    if all(v.version != str(version) for v in router_versions(registry, task)):
        raise VersionNotFound(f"task {task!r} has no router version {version!r}")
    registry.gateway.set_alias(router_model_name(task), CHAMPION, str(version))


def register_router(
    registry: PrefixRegistry, task: str, router: RouterModel, metrics: dict[str, float], *, promote: bool = False
) -> RouterVersion:
    """Store `router` as a new version of the task's router model (its parent: the current champion)."""
    name = router_model_name(task)
    registry.gateway.create_task_model(
        name,
        tags={TAG_ROUTER_OF: task},
        description=f"Regime router of task '{task}': picks one of its regimes per text from the frozen base's "
        "sentence embedding; below its threshold the fallback regime answers.",
    )
    current = router_champion_version(registry, task)
    with RecordedRun(registry, task, f"router-{task}", kind=RUN_KIND) as run:
        run.log_params(
            {
                "regimes": ",".join(router.regimes),
                "fallback": router.fallback,
                "threshold": router.threshold,
                "base": router.base,
                "max_length": router.max_length,
                "features": router.features.value,
            }
        )
        run.log_metrics(metrics)
        registry.gateway.log_text(run.run_id, router.to_json(), f"{ROUTER_FOLDER}/{ROUTER_FILE}")
        artifact_uri = run.artifact_uri
        run_id = run.run_id
    tags = {
        "regimes": ",".join(router.regimes),
        "fallback": router.fallback,
        "threshold": str(router.threshold),
        "features": router.features.value,
    }
    if router.accuracy is not None:
        tags["holdout_accuracy"] = f"{router.accuracy:.4f}"
    if current is not None:
        tags[TAG_PARENT] = current
    mv = registry.gateway.create_version(
        name,
        f"{artifact_uri.rstrip('/')}/{ROUTER_FOLDER}",
        run_id,
        tags=tags,
        description=f"Router over regimes {', '.join(router.regimes)} (fallback {router.fallback} below "
        f"{router.threshold:g} confidence); held-out accuracy "
        + (f"{router.accuracy:.3f}" if router.accuracy is not None else "not measured"),
    )
    if promote:
        registry.gateway.set_alias(name, CHAMPION, str(mv.version))
    return next(v for v in router_versions(registry, task) if v.version == str(mv.version))


def router_champion_version(registry: PrefixRegistry, task: str) -> str | None:
    model = registry.gateway.task_model(router_model_name(task))
    version = (model.aliases or {}).get(CHAMPION) if model is not None else None
    return str(version) if version is not None else None


def default_router_base(registry: PrefixRegistry, task: str) -> str:
    """The base of the first regime champion: the router reads the base its regimes run on."""
    for regime in regimes_of(registry, task):
        champion = registry.aliases(regime_model_name(task, regime)).get(CHAMPION)
        if champion is not None:
            return registry.version(regime_model_name(task, regime), champion).base
    raise AliasNotSet(f"task {task!r} has no regime with a champion yet; promote one first or pass --base")


@dataclass(frozen=True)
class RouterOutcome:
    version: RouterVersion
    router: RouterModel
    train_size: int
    holdout_size: int
    accuracies: dict[str, float] = field(default_factory=dict)  # holdout_accuracy_<features> of each fitted

    def summary(self) -> dict[str, Any]:
        return {
            **self.version.summary(),
            "fallback": self.router.fallback,
            "threshold": self.router.threshold,
            "base": self.router.base,
            "features": self.router.features.value,
            **self.accuracies,
            "train_size": self.train_size,
            "holdout_size": self.holdout_size,
            "promoted": CHAMPION in self.version.aliases,
        }


def train_router(
    registry: PrefixRegistry,
    task: str,
    frame: pd.DataFrame,
    text_column: str,
    regime_column: str,
    *,
    base: str | None = None,
    max_length: int = 128,
    threshold: float = 0.5,
    fallback: str | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    promote: bool = False,
    pool: PrefixPool | None = None,
    features: RouterFeatures | None = None,
) -> RouterOutcome:
    """Fit the task's router on `frame` (a text and its regime per row), measure it on a stratified held-out split,
    and register it. The embeddings come from the engine (inference/embedding.py), as serving computes them.

    `features` None (auto) fits a router on static and one on contextual embeddings of the same split and keeps
    the static one unless it loses more than STATIC_ACCURACY_TOLERANCE of held-out accuracy (`choose_features`);
    both accuracies are logged with the version."""
    from sklearn.model_selection import train_test_split

    known = regimes_of(registry, task)
    for column in (text_column, regime_column):
        if column not in frame.columns:
            raise DataError(f"expected a column {column!r} in the router's data, got columns {list(frame.columns)}")
    given = sorted(set(frame[regime_column].astype(str)))
    unknown = [regime for regime in given if regime not in known]
    if unknown:
        raise InvalidRegime(
            f"regimes {unknown} in column {regime_column!r} are not regimes of {task!r}: expected {known}"
        )
    if len(given) < 2:
        raise DataError(f"a router needs texts of at least 2 regimes in column {regime_column!r}, got {given}")
    if fallback is not None and fallback not in known:
        raise InvalidRegime(f"fallback regime {fallback!r} is not a regime of {task!r}: expected one of {known}")
    base = base or default_router_base(registry, task)
    pool = pool or PrefixPool(registry.settings.resolved_cache_dir)
    resident = pool.base_for(base, given)
    texts = frame[text_column].astype(str).tolist()
    labels = frame[regime_column].astype(str).tolist()
    train_idx, test_idx = train_test_split(np.arange(len(texts)), test_size=holdout, random_state=seed, stratify=labels)
    fitted: dict[RouterFeatures, RouterModel] = {}
    for kind in [features] if features is not None else list(AUTO_ORDER):
        embeddings = router_inputs(kind, resident, texts, max_length, router_model_name(task))
        router = RouterModel.fit(
            embeddings[train_idx],
            [labels[i] for i in train_idx],
            base=base,
            max_length=max_length,
            fallback=fallback,
            threshold=threshold,
            seed=seed,
            features=kind,
        )
        picked = router.probabilities(embeddings[test_idx]).argmax(axis=1)
        accuracy = float(np.mean([router.regimes[p] == labels[i] for p, i in zip(picked, test_idx, strict=True)]))
        fitted[kind] = router.with_accuracy(accuracy)
    router = choose_features(fitted)
    accuracy = router.accuracy if router.accuracy is not None else 0.0
    measured = {f"holdout_accuracy_{kind.value}": float(r.accuracy or 0.0) for kind, r in fitted.items()}
    version = register_router(
        registry,
        task,
        router,
        {
            "holdout_accuracy": accuracy,
            **measured,
            "train_size": float(len(train_idx)),
            "holdout_size": float(len(test_idx)),
        },
        promote=promote,
    )
    return RouterOutcome(version, router, len(train_idx), len(test_idx), measured)


# Auto: static features unless they lose more than this much held-out accuracy against contextual ones.
STATIC_ACCURACY_TOLERANCE = 0.01
AUTO_ORDER = (RouterFeatures.STATIC, RouterFeatures.CONTEXTUAL)


def choose_features(fitted: dict[RouterFeatures, RouterModel]) -> RouterModel:
    """The router to keep: the only one fitted, or the static one when its held-out accuracy is within
    STATIC_ACCURACY_TOLERANCE of the contextual one's (it spares every routed text a forward pass), else the
    contextual one."""
    if len(fitted) == 1:
        return next(iter(fitted.values()))
    static, contextual = fitted[RouterFeatures.STATIC], fitted[RouterFeatures.CONTEXTUAL]
    if (static.accuracy or 0.0) >= (contextual.accuracy or 0.0) - STATIC_ACCURACY_TOLERANCE:
        return static
    return contextual
