"""Addresses of MLflow UI pages, opened in the UI's machine-learning view.

    experiment_url(ui, "3")          http://host:5000/#/experiments/3/runs?workflowType=machine_learning
    run_url(ui, "3", run_id)         http://host:5000/#/experiments/3/runs/<run_id>?workflowType=machine_learning
    version_url(ui, "sentiment", 2)  http://host:5000/#/models/sentiment/versions/2?workflowType=machine_learning

MLflow 3.17's UI has two views, "GenAI" (traces; its default, and the last one a browser chose) and "Machine
learning" (runs, the model registry in the sidebar). It takes the view from the address's `workflowType`, so these
links land on an experiment's runs and keep "Model registry" in the sidebar whatever the browser chose before.
"""

from __future__ import annotations

ML_VIEW_QUERY = "workflowType=machine_learning"


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """The experiment's runs table."""
    return f"{ui_url}/#/experiments/{experiment_id}/runs?{ML_VIEW_QUERY}"


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """One run's page (e.g. the monitoring run that found the drift)."""
    return f"{ui_url}/#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW_QUERY}"


def model_url(ui_url: str, task: str) -> str:
    """The task's registered model: its versions, aliases and history."""
    return f"{ui_url}/#/models/{task}?{ML_VIEW_QUERY}"


def version_url(ui_url: str, task: str, version: str) -> str:
    """One registered version's page."""
    return f"{ui_url}/#/models/{task}/versions/{version}?{ML_VIEW_QUERY}"
