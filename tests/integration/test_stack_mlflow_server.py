"""``fraud__train`` against a real MLflow tracking server: Postgres backend store, artifacts
proxied to an S3 bucket (moto), the server reached only through the ``mlflow_default``
Airflow connection.

Nothing in the repo changes for this: the connection (``AIRFLOW_CONN_MLFLOW_DEFAULT``) is the
whole configuration. The test then reads everything back over HTTP, from the bucket and from
the server's Postgres database.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.integration import stack

ROOT = Path(__file__).resolve().parents[2]
LAST_DAY = dt.date(2026, 6, 1)
LOGICAL = dt.datetime(2026, 6, 2, tzinfo=dt.UTC)
ARTIFACT_PREFIX = "mlflow"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory, airflow_db):
    """One ``fraud__train`` run on a fresh workspace, tracked by a fresh MLflow server."""
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.data.generate import write_landing
    from mlflywheel.services.settings import Workspace
    from tests.helpers import run_dag

    logs = tmp_path_factory.mktemp("mlflow-server")
    with (stack.moto_s3() as s3, stack.bucket(s3, "flywheel-mlflow") as bucket,
          stack.postgres_database("flywheel_mlflow") as db_uri,
          stack.mlflow_server(db_uri, f"s3://{bucket}/{ARTIFACT_PREFIX}", s3_endpoint_url=s3.endpoint_url,
                              log_dir=logs) as server,
          pytest.MonkeyPatch.context() as mp):
        mp.setenv("FLYWHEEL_HOME", str(tmp_path_factory.mktemp("ws-mlflow-server")))
        mp.setenv("FLYWHEEL_PIPELINES_DIR", str(ROOT / "include" / "pipelines"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        host, port = server.url.removeprefix("http://").split(":")
        mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", stack.connection_json(conn_type="http", host=host, port=int(port)))
        ws = Workspace.from_env().ensure()
        config = load_pipeline(ws.pipelines_dir / "fraud.yaml")
        write_landing(config, ws, start=LAST_DAY - dt.timedelta(days=34), end=LAST_DAY + dt.timedelta(days=1))
        state, states, _ = run_dag("flywheel_train.py", "build_train_dag", config, LOGICAL)
        yield {"ws": ws, "config": config, "state": state, "states": states, "server": server, "s3": s3,
               "bucket": bucket, "db_uri": db_uri}


def _client(server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def test_training_dag_tracks_and_registers_on_the_server(trained):
    ws, config, server = trained["ws"], trained["config"], trained["server"]
    assert trained["state"] == "success", trained["states"]
    assert trained["states"]["register"] == trained["states"]["benchmark"] == "success"
    # nothing went to the embedded store
    assert not (ws.mlflow_dir / "mlflow.db").exists()
    client = _client(server)
    experiment = client.get_experiment_by_name(f"flywheel/{config.name}")
    assert experiment.artifact_location.startswith("mlflow-artifacts:/")
    (version,) = client.search_model_versions(f"name = '{config.model_name}'")
    assert version.version == "1"
    assert sorted(client.get_model_version(config.model_name, "1").aliases) == ["challenger", "champion"]
    run = client.get_run(version.run_id)
    assert run.info.experiment_id == experiment.experiment_id
    assert run.data.metrics["holdout_roc_auc"] > 0.85
    assert run.data.tags["flywheel.gate.decision"] == "approved"
    assert version.tags["flywheel.onnx.fp32.published"] == "true"
    # the SLA verdict depends on this machine's load; that it was written to the server is the point
    assert version.tags["flywheel.benchmark.decision"] in ("approved", "rejected")
    assert {a.path for a in client.list_artifacts(version.run_id, "benchmark")} == {
        "benchmark/verdict.json", "benchmark/table.md", "benchmark/latency.png"}
    verdict = json.loads(Path(client.download_artifacts(version.run_id, "gate/verdict.json")).read_text())
    assert verdict["decision"] == "approved"
    # the validate task's run went to the server too (through the same connection)
    validation = client.get_experiment_by_name(f"flywheel/{config.name}/validation")
    assert validation is not None and client.search_runs([validation.experiment_id])


def test_artifacts_are_objects_in_the_bucket(trained):
    s3, bucket, server = trained["s3"], trained["bucket"], trained["server"]
    client = _client(server)
    (version,) = client.search_model_versions(f"name = '{trained['config'].model_name}'")
    keys = s3.keys(bucket, f"{ARTIFACT_PREFIX}/")
    run_keys = [k for k in keys if f"/{version.run_id}/artifacts/" in k]
    assert {k.split("/artifacts/", 1)[1] for k in run_keys} >= {
        "benchmark/verdict.json", "benchmark/table.md", "benchmark/latency.png", "gate/verdict.json"}
    # the logged model (its ONNX variants included) lives in the bucket too
    model_id = version.source.removeprefix("models:/")
    assert model_id.startswith("m-")
    model_keys = {k.split("/artifacts/", 1)[1] for k in keys if f"/models/{model_id}/artifacts/" in k}
    assert {"MLmodel", "onnx/model-fp32.onnx"} <= model_keys
    body = s3.client.get_object(Bucket=bucket, Key=next(k for k in run_keys if k.endswith("gate/verdict.json")))
    assert json.loads(body["Body"].read())["decision"] == "approved"


def test_champion_loads_as_onnx_through_the_server(trained):
    import dataclasses

    import mlflow

    from mlflywheel.services import tracking
    from mlflywheel.services.served import load_version

    ws = dataclasses.replace(trained["ws"], mlflow_tracking_uri=trained["server"].url)
    config = trained["config"]
    with tracking.active(ws):
        graph = mlflow.onnx.load_model(f"models:/{config.model_name}@champion")
    assert [i.name for i in graph.graph.input] == config.feature_columns
    model = load_version(ws, config.model_name, "1")
    tags = _client(trained["server"]).get_model_version(config.model_name, "1").tags
    assert model.sha256 == tags["flywheel.onnx.fp32.sha256"]


def test_backend_store_is_the_postgres_database(trained):
    import psycopg2

    with psycopg2.connect(trained["db_uri"]) as db, db.cursor() as cur:
        cur.execute("select name, version from model_versions")
        rows = cur.fetchall()
        cur.execute("select alias from registered_model_aliases order by alias")
        aliases = [row[0] for row in cur.fetchall()]
    assert rows == [(trained["config"].model_name, 1)]
    assert aliases == ["challenger", "champion"]
