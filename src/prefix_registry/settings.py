"""One settings object, read when a command runs (never at import), honouring the ecosystem's own variables."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Where prefix-registry keeps its state and whom it tells.

    Every field can be set by environment variable: `PREFIX_REGISTRY_<FIELD>` unless another name is given.
    """

    model_config = SettingsConfigDict(env_prefix="PREFIX_REGISTRY_", extra="ignore")

    home: Path = Field(
        default=Path("~/.prefix-registry"),
        description="Folder for the default MLflow store, artifacts, caches and the prediction log.",
    )
    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "PREFIX_REGISTRY_TRACKING_URI"),
        description="MLflow tracking URI; default: a SQLite store under home.",
    )
    registry_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_REGISTRY_URI", "PREFIX_REGISTRY_REGISTRY_URI"),
        description="MLflow model registry URI; default: the tracking URI.",
    )
    artifact_root: str | None = Field(
        default=None,
        description="Where new experiments store artifacts (e.g. s3://bucket/prefixes); default: home/artifacts.",
    )
    cache_dir: Path | None = Field(default=None, description="Converted base models and downloaded versions.")
    prediction_log_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the prediction log (e.g. postgresql+psycopg://...); default: SQLite in home.",
    )
    actor: str = Field(default_factory=getpass.getuser, description="Who is recorded as making alias changes.")
    alert_webhooks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Webhook URLs that receive alerts (comma-separated in the environment).",
    )
    alert_secret: SecretStr | None = Field(
        default=None, description="Shared secret for the HMAC-SHA256 signature of alert payloads."
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC-SHA256 signature of each new version's adapter digest; when set, loading checks "
        "the signature of every signed version.",
    )
    drift_config: Path | None = Field(default=None, description="YAML file of drift thresholds; default: built in.")
    api_keys_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the hashed API keys; default: the prediction log's database when one is set, "
        "else SQLite in home (api_keys.db).",
    )
    lock_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database holding the alias-move lock, reached by every process that "
        "promotes or rolls back; default: the prediction log's database when one is set, else SQLite in home.",
    )
    lock_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds an alias move waits for another one to finish before giving up."
    )
    feedback_per_minute: float = Field(
        default=600.0, gt=0, description="Feedback labels one API key (or the anonymous client) may post per minute."
    )
    feedback_burst: int = Field(
        default=100, ge=1, description="Feedback labels one API key may post at once before the rate limit applies."
    )
    predict_per_minute: float | None = Field(
        default=None,
        gt=0,
        description="Prediction requests one API key (or the anonymous client) may send per minute (429 with "
        "Retry-After beyond it); unset: no limit.",
    )
    predict_burst: int = Field(
        default=60, ge=1, description="Prediction requests one API key may send at once before its rate applies."
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request header block the server reads (431 beyond it)."
    )
    request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client has to send one whole request (headers and body) before it is closed (408).",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Most connections and requests the server holds open at once; beyond them it answers 503 at "
        "once, so a flood of clients costs bounded memory (uvicorn's limit_concurrency).",
    )
    # Cross-request batching of predictions (serving/batcher.py).
    max_batch: int = Field(default=32, ge=1, le=1024, description="Most texts in one forward pass of the server.")
    max_wait_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="Milliseconds a request waits for others to share its forward pass (0: run at once).",
    )
    max_queue_rows: int = Field(
        default=256,
        ge=1,
        le=1_000_000,
        description="Most texts waiting for a forward pass; a request beyond them gets 503 with Retry-After.",
    )
    predict_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds a prediction request may wait for its texts to run before it gets 503 (not run).",
    )
    api_keys_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="Seconds the server keeps trusting the keys it read while the key store is unreadable; past "
        "them every keyed request gets 503 until the store answers.",
    )
    alert_max_age_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="Queued alerts older than this are dropped, not delivered (with a log line).",
    )
    max_label_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Largest share of a retrain's fresh labels, and of its judge set, that one API key may supply.",
    )
    durable_log: bool = Field(
        default=True,
        description="Answer a prediction only once its log row is committed (survives kill -9); false: queue it.",
    )
    baseline_gate: Literal["enforce", "warn"] = Field(
        default="enforce",
        description="Promoting to champion a version below its linear-probe baseline: 'enforce' refuses it unless "
        "forced with a reason, 'warn' logs a warning (for throwaway stores, such as tests of tiny models).",
    )
    # Low-precision serving (issue 20): see inference/precision.py and registry/precision_check.py.
    serving_precision: str = Field(
        default="fp32",
        description="What `prefixctl serve` runs each version's backbone at: fp32, bf16, int8, or auto (the fastest "
        "this CPU runs natively that the version passes); below fp32 only after the version's own test split loses "
        "at most precision_tolerance_points there, else at the next precision up.",
    )
    precision_tolerance_points: float = Field(
        default=0.5,
        description="Most a version's own-test decision metric (macro-F1) may lose at bf16 or int8, in points "
        "(0.5 = 0.005 macro-F1); a version that loses more serves at the next precision up.",
    )

    # Alias moves pushed to running servers (issue 21): serving/presence.py, alerts/server_push.py.
    server_push: bool = Field(
        default=True,
        description="Servers register themselves in the shared database and every alias move is pushed to them "
        "(a signed POST); false: servers only poll the registry (poll_interval_s).",
    )
    push_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret of the HMAC-SHA256 signature on alias-move pushes (and of the MLflow webhook "
        "`prefixctl serve --mlflow-webhook` registers); default: one generated on first use and kept in the server "
        "directory database beside the alias lock's, which every promoting process and server already reaches.",
    )
    push_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Seconds an alias move waits for the registered servers to acknowledge its push (all in "
        "parallel); a server that does not answer in time is logged and catches up at its next poll.",
    )
    poll_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between a server's checks of the registry for alias moves: the fallback and "
        "reconciliation behind pushes (a server that missed one converges within this period).",
    )
    server_heartbeat_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds between a server's heartbeats in the server directory; a server silent for three "
        "heartbeats is stale: it gets no pushes and is pruned.",
    )

    mlflow_ui_url: str | None = Field(
        default=None,
        description="The MLflow UI that Prefect artifacts link to; default: the tracking URI when it is a server, "
        "else http://127.0.0.1:5000 (`mlflow ui` on this machine).",
    )

    @field_validator("alert_webhooks", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.replace(";", ",").split(",") if url.strip()]
        return value

    @field_validator("home", "cache_dir", "drift_config", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @property
    def signing_key_text(self) -> str | None:
        return self.signing_key.get_secret_value() if self.signing_key else None

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def resolved_registry_uri(self) -> str:
        return self.registry_uri or self.resolved_tracking_uri

    @property
    def resolved_artifact_root(self) -> str | None:
        """Where new experiments keep artifacts; None lets a remote tracking server choose (proxied artifacts).

        A folder on this machine is right for a local store only: other machines cannot read it.
        """
        if self.artifact_root:
            return self.artifact_root.rstrip("/")
        if self.resolved_tracking_uri.startswith(("http://", "https://", "databricks")):
            return None
        return (self.home / "artifacts").as_uri()

    @property
    def resolved_mlflow_ui_url(self) -> str:
        if self.mlflow_ui_url:
            return self.mlflow_ui_url.rstrip("/")
        if self.resolved_tracking_uri.startswith(("http://", "https://")):
            return self.resolved_tracking_uri.rstrip("/")
        return "http://127.0.0.1:5000"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def resolved_prediction_log_url(self) -> str:
        return self.prediction_log_url or f"sqlite:///{self.home / 'predictions.db'}"

    @property
    def resolved_api_keys_url(self) -> str:
        return self.api_keys_url or self.prediction_log_url or f"sqlite:///{self.home / 'api_keys.db'}"

    @property
    def resolved_lock_url(self) -> str:
        # A shared server database when there is one (every promoting machine reaches it); never the SQLite log
        # file, whose writers an alias move would then hold up.
        if self.lock_url:
            return self.lock_url
        if self.prediction_log_url and not self.prediction_log_url.startswith("sqlite"):
            return self.prediction_log_url
        return f"sqlite:///{self.home / 'locks.db'}"

    def ensure_home(self) -> None:
        """Create the home folder when the default SQLite store lives there (done by commands, not imports)."""
        self.home.mkdir(parents=True, exist_ok=True)
