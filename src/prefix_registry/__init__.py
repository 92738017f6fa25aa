"""prefix-registry: continuous prompts (prefix, prompt and P-tuning adapters) as versioned, monitored,
self-healing production assets.

One import root; its layers depend one way, bottom to top (checked by import-linter, see `pyproject.toml`):

    prefix_registry.kinds       task kinds: what a task predicts, how it is scored, what is monitored
    prefix_registry.training    labelled text -> a trained adapter on a frozen base (no MLflow, no Prefect)
    prefix_registry.inference   the forward engine: one strategy per method
    prefix_registry.registry    every MLflow call: versions, aliases, lineage, loading; the alias mover and gates
    prefix_registry.traffic     prediction log, feedback labels, API keys
    prefix_registry.alerts      alert delivery: webhooks, Slack, the durable outbox
    prefix_registry.monitoring  drift verdicts and their monitoring runs
    prefix_registry.healing     the retrain decision and what carries it out
    prefix_registry.serving     the HTTP server: many tasks on one resident base
    prefix_registry.flows       Prefect flows composing the layers below
    prefix_registry.cli         `prefixctl`, a thin shell over all of them

`settings` (one settings object, read at run time), `errors` (the error hierarchy), `compat` (the version guard),
`config_values` (settings objects from plain mappings) and `database` (opening a SQL database) import no layer.
"""
