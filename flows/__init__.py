"""Prefect flows: thin compositions of the training, registry and monitoring libraries.

train-prefix    data -> train -> evaluate -> register (-> promote)
monitor-prefix  every N minutes: drift check per task -> report in MLflow -> alert -> `prefix.drift.detected`
retrain-prefix  on that event (or by hand): fresh labels + replay -> challenger -> gated promotion
rollback-prefix by hand (the demo's rollback): the champion back one step, as a run with its artifact

monitor_pass.py starts one monitoring pass through the monitor-prefix deployment when a runner serves it, else here.
"""
