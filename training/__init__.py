"""Training: turn labelled text into a small PEFT adapter (prefix, prompt or P-tuning) on a frozen base model.

This package knows nothing of MLflow or Prefect: it reads data, loads base models, trains, evaluates, and writes
adapter files. `registry` records what it produces; `flows` schedule it.
"""
