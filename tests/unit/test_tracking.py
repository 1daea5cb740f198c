"""MLflow plumbing: scoped URIs, run keys."""

from __future__ import annotations

import datetime as dt
import os

import mlflow
import pytest

from mlflywheel.services import tracking
from mlflywheel.services.names import TAG_RUN_KEY
from mlflywheel.services.settings import Workspace

pytestmark = pytest.mark.unit


def test_active_workspace_does_not_leak_into_the_process(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    ws = Workspace(home=tmp_path)
    with tracking.active(ws):
        assert mlflow.get_tracking_uri() == ws.tracking_uri
        assert mlflow.get_registry_uri() == ws.registry_uri
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    assert Workspace(home=tmp_path / "other").tracking_uri.endswith("other/mlflow/mlflow.db")


def test_active_restores_a_user_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    with tracking.active(Workspace(home=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path}/x.db")):
        assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/x.db"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow.internal:5000"


def test_run_key_is_stable_and_names_interval_and_window(pipeline_config):
    config = pipeline_config("fraud")
    start = dt.datetime(2026, 5, 10, tzinfo=dt.UTC)
    key = tracking.run_key(config, start, start + dt.timedelta(days=1), 28)
    assert key == "fraud/20260510T0000Z-20260511T0000Z/w28"
    other_tz = dt.datetime(2026, 5, 10, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert tracking.run_key(config, other_tz, start + dt.timedelta(days=1), 28) == key


def test_kill_running_marks_only_this_keys_running_runs(tmp_path, pipeline_config):
    config = pipeline_config("ctr")
    ws = Workspace(home=tmp_path)
    client = tracking.client(ws)
    experiment = tracking.experiment_id(client, ws, config)
    running = client.create_run(experiment, tags={TAG_RUN_KEY: "ctr/k1"})
    other = client.create_run(experiment, tags={TAG_RUN_KEY: "ctr/k2"})
    done = client.create_run(experiment, tags={TAG_RUN_KEY: "ctr/k1"})
    client.set_terminated(done.info.run_id, "FINISHED")
    assert tracking.kill_running(ws, config, "ctr/k1") == [running.info.run_id]
    assert client.get_run(running.info.run_id).info.status == "KILLED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"
    assert client.get_run(done.info.run_id).info.status == "FINISHED"
    assert client.get_experiment(experiment).artifact_location.startswith((tmp_path / "mlflow").as_uri())
