"""The Spark batch-scoring job on a real local Spark session and a registered ONNX champion.

One workspace per module: 36 days of generated fraud data, a feature snapshot, a trained,
gated, registered and exported ``fraud_detector`` (the core steps the training DAG runs),
and one ``local[2]`` session for the in-process runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlflywheel.services.config import load_pipeline
from mlflywheel.services.data.io import partition_path, write_parquet_atomic
from mlflywheel.services.settings import Workspace
from tests.helpers import run_dag, run_dag_once, train_champion

ROOT = Path(__file__).resolve().parents[2]
LAST_DAY = dt.date(2026, 6, 1)
pytestmark = pytest.mark.integration
logging.getLogger("py4j").setLevel(logging.WARNING)  # its exit-time INFO lines hit closed capture streams


def _at(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A workspace whose ``fraud_detector@champion`` carries a published fp32 ONNX variant."""
    from mlflywheel.services.data.generate import write_landing

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(tmp_path_factory.mktemp("ws-batch")))
        ws = Workspace.from_env().ensure()
        config = load_pipeline(ws.pipelines_dir / "fraud.yaml")
        write_landing(config, ws, start=LAST_DAY - dt.timedelta(days=34), end=LAST_DAY + dt.timedelta(days=2))
        champion = train_champion(ws, config, LAST_DAY + dt.timedelta(days=1))
        yield ws, config, champion["snapshot"], champion["version"]


@pytest.fixture(scope="module")
def spark(champion):
    from mlflywheel.stages.batch_score.session import get_session

    _, config, _, _ = champion
    session = get_session(config.model_copy(update={"batch": config.batch.model_copy(
        update={"spark_conf": {"spark.master": "local[2]"}})}), "flywheel-batch-tests")
    yield session
    session.stop()


def _run(spark, ws, config, day, **kwargs):
    from mlflywheel.stages.batch_score.job import run

    start, end = _at(day)
    return run(spark, config, ws, start=start, end=end, **kwargs)


def _partition(ws, config, day) -> Path:
    return ws.predictions_root / config.name / f"ds={day}"


def _landing(ws, config, day) -> pd.DataFrame:
    return pd.read_parquet(partition_path(config, ws, day))


@pytest.fixture
def edit_landing(champion):
    """Rewrite landing partitions for one test; each is put back byte for byte afterwards, so no
    other test (the example DAG's drift check reads a month of them) sees another's edits."""
    ws, config, _, _ = champion
    originals: dict[Path, bytes] = {}

    def edit(day: dt.date, frame: pd.DataFrame | None = None) -> Path:
        path = partition_path(config, ws, day)
        originals.setdefault(path, path.read_bytes())
        if frame is not None:
            write_parquet_atomic(frame, path)
        return path

    yield edit
    for path, data in originals.items():
        path.write_bytes(data)


def test_scores_equal_feast_point_in_time_features_through_onnx(champion, spark):
    """Features joined in Spark are the rows Feast gave training: no training-serving skew."""
    from mlflywheel.services.served import load_version

    ws, config, snapshot, version = champion
    summary = _run(spark, ws, config, LAST_DAY)
    day_rows = pd.read_parquet(snapshot["uri"])
    day_rows = day_rows[day_rows[config.data.timestamp].dt.date == LAST_DAY]
    expected = pd.Series(load_version(ws, config.model_name, version).predict_proba(day_rows),
                         index=day_rows[config.data.id_column].to_numpy())
    out = pd.read_parquet(_partition(ws, config, LAST_DAY))
    assert summary["rows"] == len(out) == len(day_rows) == len(_landing(ws, config, LAST_DAY))
    scores = out.set_index(config.data.id_column)["score"]
    assert scores.index.is_unique and set(scores.index) == set(expected.index)
    assert np.abs(scores.reindex(expected.index).to_numpy() - expected.to_numpy()).max() < 1e-12
    assert ((out["score"] >= config.gate.decision_threshold).astype("int8") == out["decision"]).all()
    assert set(out["model_version"]) == {version} and set(out["model_name"]) == {config.model_name}
    manifest = json.loads((_partition(ws, config, LAST_DAY) / "_manifest.json").read_text())
    assert manifest["input_rows"] == manifest["rows"] == len(out) and manifest["quarantined_rows"] == 0
    assert manifest["model_version"] == version and manifest["source"] == "features"
    assert len(manifest["inputs"]) >= 2  # the landing partition and the feature files it joined


def test_rerun_replaces_only_its_partition_with_the_same_checksum(champion, spark):
    ws, config, _, _ = champion
    other = LAST_DAY - dt.timedelta(days=1)
    _run(spark, ws, config, other)
    other_files = {p.name: p.stat().st_mtime_ns for p in _partition(ws, config, other).iterdir()}
    first = _run(spark, ws, config, LAST_DAY)["days"][str(LAST_DAY)]
    second = _run(spark, ws, config, LAST_DAY)["days"][str(LAST_DAY)]
    assert first["checksum"] == second["checksum"] and first["input_digest"] == second["input_digest"]
    out = pd.read_parquet(_partition(ws, config, LAST_DAY))
    assert len(out) == second["rows"] and out[config.data.id_column].is_unique
    assert {p.name: p.stat().st_mtime_ns for p in _partition(ws, config, other).iterdir()} == other_files
    assert list((ws.predictions_root / config.name / "_staging").iterdir()) == []


def test_quarantine_holds_exactly_the_injected_bad_rows(champion, spark, edit_landing):
    ws, config, _, _ = champion
    day = LAST_DAY - dt.timedelta(days=2)
    frame = _landing(ws, config, day)
    frame["amount"] = frame["amount"].map(lambda v: f"{v:.2f}")   # numbers stored as text still score
    frame.loc[frame.index[:4], "merchant_category"] = None         # null in a required column
    frame.loc[frame.index[4:7], "amount"] = "n/a"                   # not a number
    frame.loc[frame.index[7], "amount"] = None                      # null number
    edit_landing(day, frame)
    summary = _run(spark, ws, config, day)["days"][str(day)]
    assert summary["quarantined_rows"] == 8 and summary["rows"] == len(frame) - 8
    bad = pd.read_parquet(ws.quarantine_root / config.name / f"ds={day}")
    assert sorted(bad[config.data.id_column]) == sorted(frame[config.data.id_column][:8])
    reasons = dict(zip(bad[config.data.id_column], bad["_reason"], strict=True))
    assert reasons[frame[config.data.id_column].iloc[0]] == "null:merchant_category"
    assert reasons[frame[config.data.id_column].iloc[5]] == "not_a_number:amount"
    assert reasons[frame[config.data.id_column].iloc[7]] == "null:amount"
    assert bad.set_index(config.data.id_column).loc[frame[config.data.id_column].iloc[5], "amount"] == "n/a"


def test_too_many_bad_rows_publish_nothing_and_keep_the_previous_output(champion, spark, edit_landing):
    from mlflywheel.services.errors import DataValidationError

    ws, config, _, _ = champion
    day = LAST_DAY - dt.timedelta(days=3)
    _run(spark, ws, config, day)
    before = (_partition(ws, config, day) / "_manifest.json").read_text()
    frame = _landing(ws, config, day)
    frame.loc[frame.index[: len(frame) // 10], "channel"] = None   # 10 % > max_bad_share 1 %
    edit_landing(day, frame)
    with pytest.raises(DataValidationError, match=r"failed validation, over batch.max_bad_share"):
        _run(spark, ws, config, day)
    assert (_partition(ws, config, day) / "_manifest.json").read_text() == before
    bad = pd.read_parquet(ws.quarantine_root / config.name / f"ds={day}")
    assert len(bad) == len(frame) // 10  # the refused rows are there to look at


def test_empty_input_gives_an_explicit_zero_row_partition(champion, spark, edit_landing):
    ws, config, _, _ = champion
    day = LAST_DAY - dt.timedelta(days=4)
    import pyarrow.parquet as pq

    path = edit_landing(day)
    pq.write_table(pq.read_table(path).slice(0, 0), path)  # no rows, the same typed columns
    summary = _run(spark, ws, config, day)["days"][str(day)]
    assert summary["rows"] == 0
    manifest = json.loads((_partition(ws, config, day) / "_manifest.json").read_text())
    assert manifest["input_rows"] == manifest["rows"] == manifest["quarantined_rows"] == 0
    out = pd.read_parquet(_partition(ws, config, day))
    assert len(out) == 0 and {"score", "decision", "model_version", "run_id"} <= set(out.columns)


@pytest.mark.parametrize(("case", "error", "message"), [
    ("missing_column", "SchemaMismatch", r"lacks column\(s\) \['channel'\]"),
    ("wrong_dtype", "SchemaMismatch", r"column 'country': expected strings .* found bigint"),
    ("bool_number", "SchemaMismatch", r"column 'amount': expected a number, found boolean"),
    ("unknown_alias", "RegistryError", r"fraud_detector@nonexistent does not exist"),
    ("model_inputs", "SchemaMismatch", r"the ONNX graph takes .* but the pipeline's features are"),
])
def test_bad_input_is_a_clear_error_and_publishes_nothing(champion, spark, edit_landing, case, error, message):
    from mlflywheel.services import errors

    ws, config, _, _ = champion
    day = LAST_DAY - dt.timedelta(days=10)
    frame = _landing(ws, config, day)
    kwargs = {}
    if case == "missing_column":
        frame = frame.drop(columns=["channel"])
    elif case == "wrong_dtype":
        frame["country"] = np.arange(len(frame))
    elif case == "bool_number":
        frame["amount"] = frame["amount"] > 100
    elif case == "unknown_alias":
        kwargs["alias"] = "nonexistent"
    elif case == "model_inputs":
        training = config.training.model_copy(update={"numeric": config.training.numeric[:-1]})
        config = config.model_copy(update={"training": training})
    edit_landing(day, frame)
    with pytest.raises(getattr(errors, error), match=message):
        _run(spark, ws, config, day, **kwargs)
    assert not _partition(ws, config, day).exists()


def test_a_killed_job_leaves_no_partial_partition(champion, spark):
    """kill -9 the spark-submit process tree mid-write: the previous partition stays as it was."""
    ws, config, _, _ = champion
    day = LAST_DAY - dt.timedelta(days=5)
    _run(spark, ws, config, day)
    partition = _partition(ws, config, day)
    before = {p.name: p.read_bytes() for p in partition.iterdir()}
    staging = ws.predictions_root / config.name / "_staging"
    start, end = _at(day)
    env = {**os.environ, "FLYWHEEL_HOME": str(ws.home)}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("spark-submit")), "--master", "local[1]",
                             str(ROOT / "include" / "mlflywheel" / "stages" / "batch_score" / "job.py"),
                             "--pipeline", config.name,
                             "--start", start.isoformat(), "--end", end.isoformat(), "--submission", "killed"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not any(staging.glob(f"ds={day}.*")):
            assert proc.poll() is None, "the job ended before it started writing"
            assert time.monotonic() < deadline, "the job never started writing"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert any(staging.glob(f"ds={day}.*")), "killed after publishing: the test did not hit the write"
    assert {p.name: p.read_bytes() for p in partition.iterdir()} == before
    assert len(pd.read_parquet(ws.predictions_root / config.name)) > 0  # readers skip _staging
    _run(spark, ws, config, day)  # the next run clears what the killed one left
    assert not any(staging.glob(f"ds={day}.*"))
    assert json.loads((partition / "_manifest.json").read_text())["rows"] == json.loads(
        before["_manifest.json"])["rows"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, f"{log.name} exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {log}:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


@pytest.fixture
def standalone_cluster(tmp_path):
    """A Spark standalone master and one worker on 127.0.0.1, from the installed pyspark."""
    spark_class = str(Path(sys.executable).with_name("spark-class"))
    port = _free_port()
    from pyspark.find_spark_home import _find_spark_home

    env = {**os.environ, "SPARK_HOME": _find_spark_home(), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
           "SPARK_WORKER_DIR": str(tmp_path / "work"), "SPARK_LOG_DIR": str(tmp_path)}
    procs = []
    try:
        master_log = tmp_path / "master.log"
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(_free_port())],
            env=env, stdout=master_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for(master_log, "I have been elected leader", procs[0])
        worker_log = tmp_path / "worker.log"
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host",
             "127.0.0.1", "--cores", "2", "--memory", "2g", "--webui-port", str(_free_port())],
            env=env, stdout=worker_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for(worker_log, "Successfully registered with master", procs[1])
        yield f"spark://127.0.0.1:{port}", worker_log
    finally:
        for proc in reversed(procs):  # stop exactly what was started
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_the_same_job_on_a_standalone_cluster_through_the_airflow_connection(
        champion, spark, standalone_cluster, airflow_db, tmp_path, monkeypatch):
    """``<pipeline>__batch_score`` with ``spark_default`` = the cluster gives the local run's rows and scores."""
    ws, config, _, _ = champion
    master, worker_log = standalone_cluster
    monkeypatch.setenv("FLYWHEEL_HOME", str(ws.home))
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": master}))
    day = LAST_DAY - dt.timedelta(days=6)
    _run(spark, ws, config, day, output_root=tmp_path / "local")
    state, _, _ = run_dag("flywheel_batch.py", "build_batch_dag", config, dt.datetime(2026, 6, 3, tzinfo=dt.UTC),
                          {"day": str(day)})
    assert state == "success"
    assert "Asked to launch executor" in worker_log.read_text()  # the work ran on the cluster's worker
    key = [config.data.id_column, "score", "decision", "model_version"]
    local = pd.read_parquet(tmp_path / "local").sort_values(config.data.id_column)[key].reset_index(drop=True)
    cluster = pd.read_parquet(_partition(ws, config, day)).sort_values(config.data.id_column)[key]
    pd.testing.assert_frame_equal(local, cluster.reset_index(drop=True))
    manifests = [json.loads((folder / "_manifest.json").read_text())
                 for folder in (tmp_path / "local" / f"ds={day}", _partition(ws, config, day))]
    assert manifests[0]["checksum"] == manifests[1]["checksum"]


def test_example_dag_validates_scores_and_checks_drift(champion, airflow_db, monkeypatch):
    """``dags/example_fraud_daily.py``, the data engineers' example, runs as written."""
    import importlib.util

    from mlflywheel.services.data.generate import write_landing

    ws, config, _, version = champion
    monkeypatch.setenv("FLYWHEEL_HOME", str(ws.home))
    # the bad-input tests above corrupted landing days the drift check reads: the same seeds again
    write_landing(config, ws, start=LAST_DAY - dt.timedelta(days=34), end=LAST_DAY + dt.timedelta(days=2))
    spec = importlib.util.spec_from_file_location("_example_fraud_daily", ROOT / "dags" / "example_fraud_daily.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    day = LAST_DAY
    state, tasks, _ = run_dag_once(module.dag, dt.datetime.combine(day + dt.timedelta(days=1), dt.time(6),
                                                                   tzinfo=dt.UTC))
    assert (state, tasks) == ("success", {"validate": "success", "score": "success", "drift_check": "success"})
    manifest = json.loads((_partition(ws, config, day) / "_manifest.json").read_text())
    assert manifest["model_version"] == version and manifest["input_rows"] == len(_landing(ws, config, day))
