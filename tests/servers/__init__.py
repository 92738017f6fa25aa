"""Real servers the tests start on loopback and stop again: PostgreSQL, S3 (SeaweedFS), MLflow, Prefect, and a
webhook receiver that checks alert signatures. `integration.py` decides what a missing server binary means.
Ports, process stops and threaded uvicorn come from `prefix_registry.flows.loopback`, shared with the demo.
"""
