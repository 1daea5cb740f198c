"""The compose file's MLflow and MinIO one-shot, run for real outside Docker.

``mlflow`` runs with the exact command, environment and ``basic_auth.ini`` of
docker-compose.yml (values from .env.example); only the addresses change: the Postgres
service becomes a fresh database on the test Postgres, MinIO becomes a moto S3 server, the
auth store a temp file, the port a free one. ``minio-init`` creates the buckets first, and the
service's own health check must pass. Then: anonymous calls are refused, the admin from the
env file works, artifacts land in the bucket, a request for ``Host: mlflow:5000`` (how the
other containers call it) is accepted.

MLflow's basic-auth app needs Flask-WTF: the project depends on ``mlflow[auth]``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.stack import free_port, postgres_database
from tests.unit.test_compose import (
    COMPOSE,
    ENV_EXAMPLE,
    _argv,
    _health_argv,
    _repo_path,
    interpolate,
    read_env_file,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


#: .env.example with every change-me replaced by a generated secret, as docs/deploy.md says to do
ENV = {k: secrets.token_hex(16) if v == "change-me" else v for k, v in read_env_file(ENV_EXAMPLE).items()}
ENV["AIRFLOW_FERNET_KEY"] = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()  # Fernet.generate_key()


@pytest.fixture(scope="module")
def services():
    return yaml.safe_load(interpolate(COMPOSE.read_text(), ENV))["services"]


@pytest.fixture(scope="module")
def s3():
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        yield url, boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                                aws_secret_access_key="x")  # credential-scan: ok (moto accepts any key)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def database():
    with postgres_database("h1_mlflow") as uri:
        yield uri.rsplit("/", 1)[1]


def _service_env(service: dict, **changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
    env.update(changes)
    env["PATH"] = f"{BIN}:{env['PATH']}"
    return env


def _in_repo(argv: list[str]) -> list[str]:
    """The image's paths (/opt/mlflywheel/...) mapped to this checkout."""
    return [str(_repo_path(a)) if a.startswith("/opt/mlflywheel/") else a for a in argv]


def _get(url: str, *, auth: tuple[str, str] | None = None, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def mlflow_service(services, s3, database, tmp_path_factory):
    endpoint, client = s3
    minio_init = services["minio-init"]
    created = subprocess.run(_in_repo(_argv(minio_init["command"])), capture_output=True, text=True, timeout=120,
                             env=_service_env(minio_init, MLFLOW_S3_ENDPOINT_URL=endpoint))
    assert created.returncode == 0, created.stderr[-2000:]
    assert {b["Name"] for b in client.list_buckets()["Buckets"]} >= {"mlflow", "flywheel"}

    service = services["mlflow"]
    tmp = tmp_path_factory.mktemp("mlflow-service")
    ini = _repo_path(service["environment"]["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    ini, n = re.subn(r"(?m)^database_uri = .*$", f"database_uri = sqlite:///{tmp}/basic_auth.db", ini)
    assert n == 1
    (tmp / "basic_auth.ini").write_text(ini)
    port = free_port()
    argv = _argv(service["command"])
    argv[argv.index("--port") + 1] = str(port)
    backend = service["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert backend.endswith("@postgres:5432/mlflow")
    env = _service_env(service, MLFLOW_S3_ENDPOINT_URL=endpoint, MLFLOW_AUTH_CONFIG_PATH=str(tmp / "basic_auth.ini"),
                       MLFLOW_BACKEND_STORE_URI=backend.replace("//mlflow:", "//root:").replace(
                           "@postgres:5432/mlflow", f"@127.0.0.1:5432/{database}"))
    log = tmp / "mlflow.log"
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    health = [a.replace("5000", str(port)) for a in _in_repo(_health_argv(service))]
    try:
        _wait_healthy(health, process, log, env, timeout_s=180)
        print(f"mlflow service healthy after {time.monotonic() - started:.0f} s")
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "env": env, "client": client}
    finally:
        _stop(process)


def test_anonymous_calls_are_refused_and_the_admin_from_the_env_file_works(mlflow_service):
    url = f"{mlflow_service['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(url)[0] == 401
    password = ENV["MLFLOW_ADMIN_PASSWORD"]
    assert _get(url, auth=("admin", password + "x"))[0] == 401
    status, body = _get(url, auth=("admin", password))
    assert status == 200, body[:300]
    assert "experiments" in json.loads(body)


def test_other_containers_can_call_it_by_service_name(mlflow_service):
    password = ENV["MLFLOW_ADMIN_PASSWORD"]
    url = f"{mlflow_service['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(url, auth=("admin", password), host="mlflow:5000")[0] == 200
    assert _get(url, auth=("admin", password), host="evil.example:5000")[0] == 403


def test_artifacts_go_to_the_minio_bucket(mlflow_service, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    password = ENV["MLFLOW_ADMIN_PASSWORD"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(tracking_uri=mlflow_service["url"])
    experiment = client.create_experiment(f"compose-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    keys = [o["Key"] for o in mlflow_service["client"].list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert any(k.startswith("artifacts/") and k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys


def _wait_healthy(argv: list[str], process: subprocess.Popen, log: Path, env: dict[str, str],
                  timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"{process.args[:2]} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        check = subprocess.run(argv, capture_output=True, text=True, env=env)
        if check.returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"health check {argv} never passed: {check.stderr}\n{log.read_text()[-3000:]}")
        time.sleep(2)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_spark_master_and_worker_commands_form_a_cluster(services, tmp_path):
    """The services' spark-class commands and health checks; addresses moved to 127.0.0.1 and free ports."""
    import pyspark

    master_port, master_ui, worker_ui = free_port(), free_port(), free_port()
    swap = {"spark-master": "127.0.0.1", "7077": str(master_port), "8080": str(master_ui), "8081": str(worker_ui),
            "spark://spark-master:7077": f"spark://127.0.0.1:{master_port}"}
    env = {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOG_DIR": str(tmp_path / "logs"),
           "SPARK_WORKER_DIR": str(tmp_path / "work"), "PATH": f"{BIN}:{os.environ['PATH']}"}
    processes = []
    try:
        for name in ("spark-master", "spark-worker"):
            service = services[name]
            argv = [swap.get(a, a) for a in _argv(service["command"])]
            if name == "spark-worker":
                argv[argv.index("--memory") + 1] = "512m"
                argv[argv.index("--cores") + 1] = "1"
            log = tmp_path / f"{name}.log"
            with open(log, "w") as out:
                processes.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT))
            health = [a.replace(":8080/", f":{master_ui}/").replace(":8081/", f":{worker_ui}/")
                      for a in _in_repo(_health_argv(service))]
            _wait_healthy(health, processes[-1], log, env)
        deadline = time.monotonic() + 60
        while (state := json.loads(_get(f"http://127.0.0.1:{master_ui}/json/")[1]))["aliveworkers"] < 1:
            assert time.monotonic() < deadline, state
            time.sleep(1)
        assert state["url"] == f"spark://127.0.0.1:{master_port}"
    finally:
        for process in reversed(processes):
            _stop(process)


def test_airflow_init_migrates_sets_the_admin_password_and_resolves_the_connections(services, tmp_path):
    """deploy/airflow/init.sh with the airflow-init environment, on a fresh database of the test Postgres."""
    import psycopg2

    service = services["airflow-init"]
    with postgres_database("h1_airflow") as uri:
        name = uri.rsplit("/", 1)[1]
        conn = service["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert conn.endswith("@postgres:5432/airflow")
        passwords = tmp_path / "airflow" / "passwords.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_"))}
        env.update({k: str(v) for k, v in service["environment"].items()})
        env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), PATH=f"{BIN}:{os.environ['PATH']}",
                   AIRFLOW__CORE__DAGS_FOLDER=str(tmp_path / "dags"),
                   AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
                   AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(tmp_path / "logs"),
                   AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=conn.replace("//airflow:", "//root:").replace(
                       "@postgres:5432/airflow", f"@127.0.0.1:5432/{name}"))
        result = subprocess.run(_in_repo(_argv(service["command"])), env=env, capture_output=True, text=True,
                                timeout=540)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "airflow-init done" in result.stdout
        assert json.loads(passwords.read_text()) == {"admin": ENV["AIRFLOW_ADMIN_PASSWORD"]}
        assert passwords.stat().st_mode & 0o077 == 0, oct(passwords.stat().st_mode)
        with psycopg2.connect(host="127.0.0.1", port=5432, user="root", dbname=name) as db, db.cursor() as cur:
            cur.execute("SELECT count(*) FROM alembic_version")
            assert cur.fetchone()[0] == 1  # migrated
        broken = {k: v for k, v in env.items() if k != "AIRFLOW_CONN_SPARK_DEFAULT"}
        failed = subprocess.run(_in_repo(_argv(service["command"])), env=broken, capture_output=True, text=True,
                                timeout=540)
        assert failed.returncode != 0 and "connection spark_default is not defined" in failed.stderr
        bad_key = subprocess.run(_in_repo(_argv(service["command"])), capture_output=True, text=True, timeout=540,
                                 env={**env, "AIRFLOW__CORE__FERNET_KEY": "change-me"})
        assert bad_key.returncode != 0 and "AIRFLOW_FERNET_KEY is not a Fernet key" in bad_key.stderr
