"""The S3 mirror of landing partitions and the predictions upload, against a moto S3 server
through the Amazon provider's ``S3Hook`` (real boto calls, an ``aws_default`` connection)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from mlflywheel.services.errors import ConfigError, DataNotFound
from mlflywheel_airflow.hooks import storage
from tests.integration import stack

pytestmark = pytest.mark.operators
DAY = dt.date(2026, 6, 1)
START = dt.datetime(2026, 6, 1, 6, tzinfo=dt.UTC)
END = dt.datetime(2026, 6, 2, 6, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def s3():
    with stack.moto_s3() as server:
        yield server


@pytest.fixture
def env(s3, tmp_path, monkeypatch, pipeline_config):
    """A fresh bucket, the connection to it, and an empty local landing root."""
    from mlflywheel.services.settings import Workspace

    with stack.bucket(s3, "flywheel-unit") as name:
        monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("FLYWHEEL_LANDING_URI", f"s3://{name}/raw")
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", stack.connection_json(
            conn_type="aws", login="testing", password="testing",
            extra={"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}))
        config = pipeline_config("fraud")
        yield {"bucket": name, "ws": Workspace.from_env(), "config": config,
               "base": f"raw/{config.data.landing}"}


def _put(s3, bucket: str, key: str, body: bytes) -> None:
    s3.client.put_object(Bucket=bucket, Key=key, Body=body)


class Recording:
    """The real client, with the mutating calls it received recorded in order."""

    def __init__(self, client):
        self.client, self.calls = client, []

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if name in ("upload_file", "delete_object", "download_file"):
            def record(*args, **kwargs):
                key = kwargs.get("Key") or args[{"upload_file": 2, "download_file": 1}[name]]
                self.calls.append((name, key))
                return attr(*args, **kwargs)
            return record
        return attr


def test_mirror_copies_the_window_and_skips_unchanged_objects(s3, env):
    bucket, base, ws, config = env["bucket"], env["base"], env["ws"], env["config"]
    old = DAY - dt.timedelta(days=storage.landing_lookback_days(config) + 1)
    for day, body in [(DAY, b"day"), (DAY - dt.timedelta(days=1), b"before"), (DAY + dt.timedelta(days=1), b"after"),
                      (old, b"too old")]:
        _put(s3, bucket, f"{base}/ds={day}/part-00000.parquet", body)
    _put(s3, bucket, f"{base}/README.txt", b"not a partition")

    first = storage.mirror_landing(config, ws, start=START, end=END)
    root = ws.landing_root / config.data.landing
    assert first["days"] == [str(DAY - dt.timedelta(days=1)), str(DAY)]
    assert (root / f"ds={DAY}" / "part-00000.parquet").read_bytes() == b"day"
    assert not (root / f"ds={DAY + dt.timedelta(days=1)}").exists() and not (root / f"ds={old}").exists()
    assert sorted(p.name for p in (root / f"ds={DAY}").iterdir()) == [".part-00000.parquet.s3.json",
                                                                      "part-00000.parquet"]
    assert len(first["downloaded"]) == 2 and first["unchanged"] == []

    second = storage.mirror_landing(config, ws, start=START, end=END)
    assert second["downloaded"] == [] and len(second["unchanged"]) == 2

    _put(s3, bucket, f"{base}/ds={DAY}/part-00000.parquet", b"corrected")  # same key, new content
    third = storage.mirror_landing(config, ws, start=START, end=END)
    assert third["downloaded"] == [f"{base}/ds={DAY}/part-00000.parquet"]
    assert (root / f"ds={DAY}" / "part-00000.parquet").read_bytes() == b"corrected"

    (root / f"ds={DAY}" / "part-00000.parquet").write_bytes(b"tampered locally")  # size differs: fetched again
    assert storage.mirror_landing(config, ws, start=START, end=END)["downloaded"] == [
        f"{base}/ds={DAY}/part-00000.parquet"]
    assert (root / f"ds={DAY}" / "part-00000.parquet").read_bytes() == b"corrected"


def test_missing_interval_partition_is_late_data_named_by_its_key(s3, env):
    bucket, base = env["bucket"], env["base"]
    _put(s3, bucket, f"{base}/ds={DAY - dt.timedelta(days=1)}/part-00000.parquet", b"x")
    with pytest.raises(DataNotFound, match=rf"s3://{bucket}/{base}/ds={DAY}/part-00000.parquet: landing "
                                           rf"partition for {DAY} not found"):
        storage.mirror_landing(env["config"], env["ws"], start=START, end=END)
    # a drift check takes whatever recent days exist
    found = storage.mirror_landing(env["config"], env["ws"], start=START, end=END, require_interval=False)
    assert found["days"] == [str(DAY - dt.timedelta(days=1))]


def test_without_a_landing_uri_nothing_is_touched(env, monkeypatch):
    from mlflywheel.services.settings import Workspace

    monkeypatch.delenv("FLYWHEEL_LANDING_URI")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", "not used")  # would fail if a hook were built
    ws = Workspace.from_env()
    assert storage.mirror_landing(env["config"], ws, start=START, end=END)["source"] is None
    assert storage.upload_predictions(env["config"], ws, {"output_root": "/nowhere", "days": {"x": {}}}) == []
    assert not ws.landing_root.exists()


@pytest.mark.parametrize("uri", ["/data/landing", "gs://bucket/x", "s3://B/x", "s3:///x"])
def test_bad_uri_names_the_variable(env, monkeypatch, uri):
    from mlflywheel.services.settings import Workspace

    monkeypatch.setenv("FLYWHEEL_LANDING_URI", uri)
    with pytest.raises(ConfigError, match=f"FLYWHEEL_LANDING_URI: expected s3://bucket.*found '{uri}'"):
        storage.mirror_landing(env["config"], Workspace.from_env(), start=START, end=END)


def _partition(root: Path, day: str, parts: list[str], manifest: dict) -> None:
    folder = root / f"ds={day}"
    folder.mkdir(parents=True)
    for name in parts:
        (folder / name).write_bytes(name.encode())
    (folder / ".part-0.parquet.crc").write_bytes(b"checksum file")
    (folder / "_manifest.json").write_text(json.dumps(manifest))


def test_upload_puts_the_manifest_last_and_replaces_the_previous_partition(s3, env, tmp_path, monkeypatch):
    from mlflywheel.services.settings import Workspace

    bucket, config = env["bucket"], env["config"]
    monkeypatch.setenv("FLYWHEEL_PREDICTIONS_URI", f"s3://{bucket}/preds")
    ws = Workspace.from_env()
    first, second = tmp_path / "run1", tmp_path / "run2"
    _partition(first, str(DAY), ["part-0.parquet", "part-1.parquet", "part-2.parquet"], {"run": 1})
    _partition(second, str(DAY), ["part-0.parquet", "part-1.parquet"], {"run": 2})
    prefix = f"preds/{config.name}/ds={DAY}/"

    client = Recording(storage.s3_client())
    uris = storage.upload_predictions(config, ws, {"output_root": str(first), "days": {str(DAY): {}}}, client=client)
    assert uris == [f"s3://{bucket}/{prefix}"]
    assert s3.keys(bucket, prefix) == [prefix + n for n in
                                       ("_manifest.json", "part-0.parquet", "part-1.parquet", "part-2.parquet")]
    assert client.calls[-1] == ("upload_file", prefix + "_manifest.json")

    client = Recording(storage.s3_client())
    storage.upload_predictions(config, ws, {"output_root": str(second), "days": {str(DAY): {}}}, client=client)
    assert s3.keys(bucket, prefix) == [prefix + n for n in ("_manifest.json", "part-0.parquet", "part-1.parquet")]
    body = s3.client.get_object(Bucket=bucket, Key=prefix + "_manifest.json")["Body"].read()
    assert json.loads(body) == {"run": 2}
    # old manifest gone before any data file changes; the leftover part removed before the new manifest
    assert client.calls[0] == ("delete_object", prefix + "_manifest.json")
    assert client.calls.index(("delete_object", prefix + "part-2.parquet")) < len(client.calls) - 1
    assert client.calls[-1] == ("upload_file", prefix + "_manifest.json")


def test_upload_refuses_a_partition_without_manifest(s3, env, tmp_path, monkeypatch):
    from mlflywheel.services.settings import Workspace

    monkeypatch.setenv("FLYWHEEL_PREDICTIONS_URI", f"s3://{env['bucket']}/preds")
    (tmp_path / f"ds={DAY}").mkdir()
    with pytest.raises(FileNotFoundError, match="has no manifest"):
        storage.upload_predictions(env["config"], Workspace.from_env(),
                                   {"output_root": str(tmp_path), "days": {str(DAY): {}}})
    assert s3.keys(env["bucket"]) == []


def test_operator_mirrors_before_execute_only_when_it_reads_landing(s3, env):
    from mlflywheel_airflow.operators import RegisterModelOperator, ValidateDataOperator

    bucket, base, ws, config = env["bucket"], env["base"], env["ws"], env["config"]
    _put(s3, bucket, f"{base}/ds={DAY}/part-00000.parquet", b"day")
    op = ValidateDataOperator(task_id="validate", pipeline="fraud")
    op.interval_start, op.interval_end = START.isoformat(), END.isoformat()
    op.pre_execute({})
    assert (ws.landing_root / config.data.landing / f"ds={DAY}" / "part-00000.parquet").read_bytes() == b"day"

    other = RegisterModelOperator(task_id="register", pipeline="fraud", verdict={})
    other.interval_start, other.interval_end = "", (END + dt.timedelta(days=30)).isoformat()
    other.pre_execute({})  # no landing read: a missing partition is not its business
