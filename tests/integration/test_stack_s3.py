"""Landing data and predictions on S3 (a moto server) through the Amazon provider.

The landing partitions live only in a bucket; the local landing root starts empty. With
``FLYWHEEL_LANDING_URI``, ``FLYWHEEL_PREDICTIONS_URI`` and an ``aws_default`` connection
(``AIRFLOW_CONN_AWS_DEFAULT`` with ``endpoint_url``) the example DAG validates, scores and
drift-checks a day exactly as it does on local files, and the predictions partition appears in
the bucket with its manifest.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.integration import stack

ROOT = Path(__file__).resolve().parents[2]
LAST_DAY = dt.date(2026, 6, 1)
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory):
    """A trained champion; its landing data uploaded to a fresh bucket and an empty local cache."""
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.data.generate import write_landing
    from mlflywheel.services.data.io import landing_dir
    from mlflywheel.services.settings import Workspace
    from tests.helpers import train_champion

    with (stack.moto_s3() as s3, stack.bucket(s3, "flywheel-s3") as bucket, pytest.MonkeyPatch.context() as mp):
        home = tmp_path_factory.mktemp("ws-s3")
        source = tmp_path_factory.mktemp("landing-source")
        mp.setenv("FLYWHEEL_HOME", str(home))
        mp.setenv("FLYWHEEL_LANDING_ROOT", str(source))
        ws = Workspace.from_env().ensure()
        config = load_pipeline(ws.pipelines_dir / "fraud.yaml")
        write_landing(config, ws, start=LAST_DAY - dt.timedelta(days=34), end=LAST_DAY + dt.timedelta(days=2))
        champion = train_champion(ws, config, LAST_DAY + dt.timedelta(days=1))
        uploaded = []
        for path in sorted(landing_dir(config, ws).glob("ds=*/*.parquet")):
            key = f"landing/{config.data.landing}/{path.parent.name}/{path.name}"
            s3.client.upload_file(str(path), bucket, key)
            uploaded.append(key)
        cache = tmp_path_factory.mktemp("landing-cache")
        mp.setenv("FLYWHEEL_LANDING_ROOT", str(cache))
        mp.setenv("FLYWHEEL_LANDING_URI", f"s3://{bucket}/landing")
        mp.setenv("FLYWHEEL_PREDICTIONS_URI", f"s3://{bucket}/predictions/")
        mp.setenv("AIRFLOW_CONN_AWS_DEFAULT", stack.connection_json(
            conn_type="aws", login="testing", password="testing",
            extra={"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}))
        yield {"s3": s3, "bucket": bucket, "config": config, "source": source, "cache": cache,
               "version": champion["version"], "uploaded": uploaded, "ws": Workspace.from_env()}


def test_example_dag_reads_landing_from_s3_and_uploads_predictions(s3_stack, airflow_db):
    from mlflywheel.services.data.io import PART, landing_dir
    from tests.helpers import run_dag_once

    s3, bucket, config, ws = s3_stack["s3"], s3_stack["bucket"], s3_stack["config"], s3_stack["ws"]
    assert not any(s3_stack["cache"].iterdir())  # nothing local before the run
    spec = importlib.util.spec_from_file_location("_example_fraud_daily_s3", ROOT / "dags" / "example_fraud_daily.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state, tasks, _ = run_dag_once(module.dag, dt.datetime.combine(LAST_DAY + dt.timedelta(days=1), dt.time(6),
                                                                   tzinfo=dt.UTC))
    assert (state, tasks) == ("success", {"validate": "success", "score": "success", "drift_check": "success"})

    # the cache holds the mirrored days up to the interval's day, byte for byte; not the day after
    cache = landing_dir(config, ws)
    mirrored = sorted(p.parent.name for p in cache.glob("ds=*/" + PART))
    assert mirrored[-1] == f"ds={LAST_DAY}" and f"ds={LAST_DAY + dt.timedelta(days=1)}" not in mirrored
    assert len(mirrored) >= config.training.window_days
    source = s3_stack["source"] / config.data.landing
    assert (cache / f"ds={LAST_DAY}" / PART).read_bytes() == (source / f"ds={LAST_DAY}" / PART).read_bytes()

    # predictions: data files and the manifest in the bucket, equal to the local partition
    local = ws.predictions_root / config.name / f"ds={LAST_DAY}"
    prefix = f"predictions/{config.name}/ds={LAST_DAY}/"
    keys = s3.keys(bucket, prefix)
    assert prefix + "_manifest.json" in keys
    local_files = sorted(p.name for p in local.iterdir() if p.is_file() and not p.name.startswith("."))
    assert sorted(k[len(prefix):] for k in keys) == local_files
    manifest = json.loads(s3.client.get_object(Bucket=bucket, Key=prefix + "_manifest.json")["Body"].read())
    assert manifest == json.loads((local / "_manifest.json").read_text())
    assert manifest["model_version"] == s3_stack["version"]
    parts = [k for k in keys if k.endswith(".parquet")]
    assert parts
    rows = sum(len(pd.read_parquet(io.BytesIO(s3.client.get_object(Bucket=bucket, Key=k)["Body"].read())))
               for k in parts)
    assert rows == manifest["rows"] > 0
    # the input the job read was the mirrored copy of the bucket's object
    assert manifest["input_rows"] == len(pd.read_parquet(cache / f"ds={LAST_DAY}" / PART))


def test_missing_partition_in_the_bucket_names_the_key(s3_stack):
    from mlflywheel.services.errors import DataNotFound
    from mlflywheel_airflow.operators import ValidateDataOperator

    config, bucket = s3_stack["config"], s3_stack["bucket"]
    day = LAST_DAY + dt.timedelta(days=10)
    op = ValidateDataOperator(task_id="validate", pipeline="fraud")
    op.interval_start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).isoformat()
    op.interval_end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).isoformat()
    key = f"s3://{bucket}/landing/{config.data.landing}/ds={day}/part-00000.parquet"
    with pytest.raises(DataNotFound, match=f"{key}: landing partition for {day} not found"):
        op.pre_execute({})
