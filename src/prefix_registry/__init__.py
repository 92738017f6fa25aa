"""prefix-registry: continuous prompts (prefix, prompt and P-tuning adapters) as versioned, monitored,
self-healing production assets.

One import root; its layers depend one way (checked by import-linter, see `.importlinter`):

    prefix_registry.training    labelled text -> a trained adapter on a frozen base (no MLflow, no Prefect)
    prefix_registry.registry    every MLflow call: versions, aliases, lineage, adapter files
    prefix_registry.monitoring  prediction log, drift verdicts, alerts, the retraining decision (no Prefect)
    prefix_registry.serving     the HTTP server: many tasks on one resident base
    prefix_registry.flows       Prefect flows composing the layers above
    prefix_registry.cli         `prefixctl`, a thin shell over all of them

`prefix_registry.settings` (one settings object, read at run time) and `prefix_registry.errors` (the error
hierarchy) sit under every layer.
"""
