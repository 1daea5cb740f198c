"""Real services for the real-stack integration tests: an S3 API (moto server), a fresh Postgres
database, an ``mlflow server`` process on both, and a Redis database.

Each helper is a context manager that creates its own resource (bucket, database, key prefix,
free port) and removes it afterwards, so tests of several sessions can share the machine's
Postgres and Redis. Test modules wrap them in fixtures. Only the standard library is imported
at the top: this module is imported at collection time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: fake credentials for moto; set only inside the tests that use the S3 API
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
PG_HOST = os.environ.get("FLYWHEEL_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("FLYWHEEL_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("FLYWHEEL_TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("FLYWHEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    """A TCP port nobody listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique(prefix: str) -> str:
    """A name no other test run uses: ``<prefix>-<pid>-<8 hex>`` (lowercase, S3- and SQL-safe with ``_``)."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# --- S3 (moto) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class S3:
    """An S3 API endpoint and the boto3 client for it."""

    endpoint_url: str
    client: object

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@contextlib.contextmanager
def moto_s3() -> Iterator[S3]:
    """A moto S3 server on a free port of 127.0.0.1, in a thread of this process.

    It speaks HTTP like any S3 endpoint, so other processes (an ``mlflow server``) reach it
    too. The fake credentials are set in ``os.environ`` for the block only.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {key: os.environ.get(key) for key in FAKE_AWS}
    os.environ.update(FAKE_AWS)
    try:
        url = f"http://{host}:{port}"
        yield S3(endpoint_url=url, client=boto3.client("s3", endpoint_url=url, region_name="us-east-1"))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@contextlib.contextmanager
def bucket(s3: S3, prefix: str = "flywheel") -> Iterator[str]:
    """A fresh bucket, emptied and deleted afterwards."""
    name = unique(prefix)
    s3.client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for key in s3.keys(name):
            s3.client.delete_object(Bucket=name, Key=key)
        s3.client.delete_bucket(Bucket=name)


# --- Postgres ----------------------------------------------------------------------------
@contextlib.contextmanager
def postgres_database(prefix: str = "flywheel") -> Iterator[str]:
    """A freshly created database on the test Postgres; yields its SQLAlchemy URI, drops it after."""
    import psycopg2

    name = unique(prefix).replace("-", "_")
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# --- MLflow tracking server ---------------------------------------------------------------
@dataclass(frozen=True)
class MlflowServer:
    url: str
    backend_store_uri: str
    artifacts_destination: str
    log_path: Path


def wait_http(url: str, *, timeout_s: float, process: subprocess.Popen | None = None,
              log_path: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail with the process's log when it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            tail = log_path.read_text()[-4000:] if log_path else ""
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            tail = log_path.read_text()[-4000:] if log_path else ""
            raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s:\n{tail}")
        time.sleep(0.5)


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts_destination: str, *, s3_endpoint_url: str,
                  log_dir: Path) -> Iterator[MlflowServer]:
    """``mlflow server`` (the venv's) on a free port of 127.0.0.1, proxying artifacts to S3.

    The server alone holds the S3 endpoint and credentials; clients upload and download
    through it (``mlflow-artifacts:/``).
    """
    port = free_port()
    log_path = log_dir / f"mlflow-server-{port}.log"
    exe = Path(sys.executable).with_name("mlflow")
    # no background job runner (huey consumers for GenAI jobs): the pipelines do not use it
    env = {**os.environ, **FAKE_AWS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint_url,
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(key, None)
    args = [str(exe), "server", "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", artifacts_destination, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_dir,
                                   start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", timeout_s=120, process=process, log_path=log_path)
        yield MlflowServer(url=url, backend_store_uri=backend_store_uri,
                           artifacts_destination=artifacts_destination, log_path=log_path)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (uvicorn workers included), SIGKILL after 20 s."""
    import signal

    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# --- Redis -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisDb:
    """A Redis endpoint, a database number and the Feast project whose keys the test owns."""

    url: str
    host: str
    port: int
    db: int
    project: str


@contextlib.contextmanager
def redis_project(prefix: str = "flywheel_t") -> Iterator[RedisDb]:
    """A Redis database and a unique Feast project name; the project's keys are deleted after.

    Feast's Redis store keys every entity row by ``<entity key bytes><project>``, so deleting
    the keys that end with the project name removes this test's data and nothing else.
    """
    import urllib.parse

    import redis

    parsed = urllib.parse.urlparse(REDIS_URL)
    db = int((parsed.path or "/0").lstrip("/") or 0)
    info = RedisDb(url=REDIS_URL, host=parsed.hostname or "127.0.0.1", port=parsed.port or 6379, db=db,
                   project=unique(prefix).replace("-", "_"))
    client = redis.Redis(host=info.host, port=info.port, db=db)
    client.ping()
    try:
        yield info
    finally:
        keys = [key for key in client.scan_iter(match=f"*{info.project}".encode(), count=1000)]
        if keys:
            client.delete(*keys)
        client.close()


def connection_json(**fields: object) -> str:
    """An Airflow connection as the JSON an ``AIRFLOW_CONN_<ID>`` variable takes."""
    return json.dumps({key: value for key, value in fields.items() if value is not None})
