"""Serving a task with regimes: each text is read by one regime's champion, chosen per text.

    forced  the request names `"regime"`: every text goes to that regime (the router is not asked)
    routed  the router's champion reads the frozen base's embedding of each text and picks the most probable
            regime; below its threshold the fallback regime answers. A contextual router's embeddings are rows of
            an embedder with no virtual tokens, through the batcher like any row (a second forward pass per text);
            a static router's are a lookup of the input token embeddings, no forward pass

Then each regime's texts are submitted to the batcher at the same moment, so rows of every regime share one mixed
forward pass (the engine batches rows of different prefixes). Each answer carries its regime, the regime version that
answered and the router's confidence (None when forced), and is logged under the regime's own model name
(`TASK.REGIME`), so each regime is monitored against its own reference window.

`RegimeRouting.refresh()` runs after each refresh of the serving table (it follows the registry; a request reads
memory only): it finds the tasks with regimes, makes sure their regimes' champions are attached, and loads a router
champion that moved.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from prefix_registry.errors import first_line
from prefix_registry.inference.attached import AttachedPrefix
from prefix_registry.inference.embedding import frozen_embedder, static_embeddings
from prefix_registry.inference.router import RegimeChoice, RouterFeatures, RouterModel
from prefix_registry.registry.regimes import TAG_REGIMES, regime_model_name
from prefix_registry.registry.routers import load_router, router_champion_version, router_model_name
from prefix_registry.serving.batcher import Batcher
from prefix_registry.serving.http import HTTPError
from prefix_registry.serving.table import ServingTable, UnknownTask
from prefix_registry.traffic.prediction_records import PredictionRecord, PredictionSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegimeRoute:
    """What a request to a task with regimes reads: its regimes (name -> model name) and its router, if any."""

    task: str
    regimes: dict[str, str]
    router: RouterModel | None = None
    router_version: str | None = None
    embedder: AttachedPrefix | None = None


@dataclass(frozen=True)
class RoutedRow:
    """One text's answer: the regime's version that read it, why that regime, and its head outputs."""

    choice: RegimeChoice
    attached: AttachedPrefix
    output: torch.Tensor


@dataclass
class RegimeRouting:
    """Tasks with regimes, kept in step with the registry after each refresh of `table`."""

    table: ServingTable
    _routes: dict[str, RegimeRoute] = field(default_factory=dict)
    _refreshing: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.table.refresh_listeners.append(self.refresh)

    def route(self, task: str) -> RegimeRoute | None:
        """The task's route, from memory only; None for a task without regimes."""
        return self._routes.get(task)

    def refresh(self) -> None:
        """Find the tasks with regimes; attach their regimes' champions; load router champions that moved."""
        if not self._refreshing.acquire(blocking=False):
            return  # attaching a regime refreshes the table, which calls this again: once is enough
        try:
            self._refresh()
        except Exception as error:  # the last good routes keep serving, as the table's versions do
            logger.warning("regime routes not refreshed: %s", first_line(error))
        finally:
            self._refreshing.release()

    def _refresh(self) -> None:
        registry = self.table.registry
        pinned = self.table.pinned_tasks
        routes: dict[str, RegimeRoute] = {}
        for model in registry.gateway.task_models():
            names = [name for name in (model.tags or {}).get(TAG_REGIMES, "").split(",") if name]
            if not names or (pinned is not None and model.name not in pinned):
                continue
            task = model.name
            regimes = {regime: regime_model_name(task, regime) for regime in names}
            missing = [slot for slot in regimes.values() if slot not in self.table.served()]
            if missing:
                if pinned is not None:
                    pinned.extend(slot for slot in missing if slot not in pinned)
                for slot in missing:
                    try:
                        self.table.refresh(tasks=[slot])
                    except Exception as error:  # no champion yet: the regime is not served until it has one
                        logger.info("%s: regime %s not served: %s", task, slot, first_line(error))
            routes[task] = self._with_router(task, regimes)
        self._routes = routes

    def _with_router(self, task: str, regimes: dict[str, str]) -> RegimeRoute:
        registry = self.table.registry
        version = router_champion_version(registry, task)
        previous = self._routes.get(task)
        if version is None:
            return RegimeRoute(task, regimes)
        if previous is not None and previous.router_version == version and previous.router is not None:
            return RegimeRoute(task, regimes, previous.router, version, previous.embedder)
        router = load_router(registry, task, version)
        base = self.table.pool.base_for(router.base, list(router.regimes))
        embedder = frozen_embedder(base, router_model_name(task), version, router.max_length)
        logger.info("%s: routing with router v%s over %s", task, version, ", ".join(router.regimes))
        return RegimeRoute(task, regimes, router, version, embedder)

    def any_prefix(self, route: RegimeRoute) -> AttachedPrefix:
        """A served regime champion of the route (what a request is admitted with); UnknownTask when none is."""
        for slot in route.regimes.values():
            if slot in self.table.served():
                return self.table.current(slot)
        raise UnknownTask(f"task {route.task!r} has regimes {sorted(route.regimes)} but none has a champion yet")

    async def choose(
        self, route: RegimeRoute, texts: list[str], forced: str | None, batcher: Batcher
    ) -> list[RegimeChoice]:
        """The regime of each text: the forced one, else the router's pick (the fallback below its threshold)."""
        if forced is not None:
            if forced not in route.regimes:
                raise HTTPError(
                    422, f"unknown regime {forced!r} of task {route.task!r}: expected one of {sorted(route.regimes)}"
                )
            return [RegimeChoice(forced, None)] * len(texts)
        if route.router is None or route.embedder is None:
            raise HTTPError(
                422,
                f"task {route.task!r} has regimes {sorted(route.regimes)} and no router champion yet: name one with "
                '"regime" in the request',
            )
        router, embedder = route.router, route.embedder
        if router.features is RouterFeatures.STATIC:
            # A table lookup, no forward pass: off the event loop, not through the batcher.
            found = await run_in_threadpool(static_embeddings, embedder.base, texts, router.max_length)
        else:
            found = np.stack([row.numpy() for row in await batcher.submit(embedder, texts)])
        return router.choose(router.probabilities(found))

    async def run(self, route: RegimeRoute, texts: list[str], forced: str | None, batcher: Batcher) -> list[RoutedRow]:
        """Every text read by its regime's champion; the regimes' rows queued together (one mixed forward pass)."""
        choices = await self.choose(route, texts, forced, batcher)
        groups: dict[str, list[int]] = {}
        for index, choice in enumerate(choices):
            groups.setdefault(choice.regime, []).append(index)
        prefixes: dict[str, AttachedPrefix] = {}
        for regime in groups:
            try:
                prefixes[regime] = self.table.current(route.regimes[regime])
            except UnknownTask:
                raise HTTPError(503, f"regime {regime!r} of task {route.task!r} has no serving champion yet") from None
        outputs = await asyncio.gather(
            *(batcher.submit(prefixes[regime], [texts[i] for i in indices]) for regime, indices in groups.items())
        )
        rows: list[RoutedRow | None] = [None] * len(texts)
        for (regime, indices), found in zip(groups.items(), outputs, strict=True):
            for index, output in zip(indices, found, strict=True):
                rows[index] = RoutedRow(choices[index], prefixes[regime], output)
        return [row for row in rows if row is not None]


def routed_records(
    texts: list[str],
    rows: list[RoutedRow],
    request_id: str,
    key_name: str | None,
    latency_ms: float,
) -> list[PredictionRecord]:
    """One log record per text, under its regime's model name and version."""
    records = []
    for text, row in zip(texts, rows, strict=True):
        prediction = row.attached.kind.logged_prediction(row.output.numpy(), row.attached.labels)
        records.append(
            PredictionRecord.new(
                row.attached.task,
                row.attached.version,
                text,
                prediction.predicted_label,
                prediction.scores,
                request_id=request_id,
                source=PredictionSource.HTTP.value,
                key_name=key_name,
                latency_ms=latency_ms,
            )
        )
    return records


def routed_response(
    task: str, request_id: str, rows: list[RoutedRow], records: list[PredictionRecord]
) -> dict[str, Any]:
    """The response body: each prediction with its regime, version and router confidence; the top-level version
    names each regime's version that answered (`long:2,short:1`)."""
    answered = sorted({(row.choice.regime, row.attached.version) for row in rows})
    return {
        "task": task,
        "version": ",".join(f"{regime}:{version}" for regime, version in answered),
        "request_id": request_id,
        "predictions": [
            {
                "prediction_id": record.prediction_id,
                "label": record.predicted_label,
                "confidence": record.confidence,
                "probabilities": record.probabilities,
                "version": record.version,
                "regime": row.choice.regime,
                "router_confidence": row.choice.confidence,
            }
            for row, record in zip(rows, records, strict=True)
        ],
    }
