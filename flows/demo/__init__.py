"""`prefixctl demo`: the whole story on real data, with real servers started and stopped here.

    train v1 on Rotten Tomatoes -> serve it -> clean RT traffic (no alarm) -> traffic shifts to IMDB reviews ->
    monitor flags drift, an alert arrives, the event triggers `retrain-prefix` -> feedback labels accumulate ->
    v2 (warm-started from v1) beats v1 on the same fresh held-out IMDB texts and is promoted -> the server swaps
    without restarting -> live accuracy recovers -> a one-step rollback

Everything is real: a Prefect server and a runner serving the deployments (subprocesses on loopback), MLflow on
SQLite, the HTTP server on loopback, Evidently, and a webhook inbox that checks the alerts' signatures.

    config.py   DemoConfig: the sizes of the story
    stage.py    the servers: started before the story, stopped after it, whatever happens
    story.py    the story itself: train, serve, shift the traffic, wait for the retrain, roll back
    summary.py  what happened, as the JSON summary and as the tables `prefixctl demo` prints
"""

from prefix_registry.flows.demo.config import DemoConfig
from prefix_registry.flows.demo.story import run_demo

__all__ = ["DemoConfig", "run_demo"]
