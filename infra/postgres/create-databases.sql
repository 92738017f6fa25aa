-- Run once by the postgres image, on an empty data volume only (/docker-entrypoint-initdb.d), as POSTGRES_USER,
-- who then owns the three databases. Each service gets its own database so it can migrate its schema freely.
CREATE DATABASE mlflow;       -- MLflow's backend store: runs, metrics, registered models, aliases
CREATE DATABASE predictions;  -- prefix-registry's prediction log (PREFIX_REGISTRY_PREDICTION_LOG_URL)
CREATE DATABASE prefect;      -- the Prefect server: deployments, flow runs, events, automations
