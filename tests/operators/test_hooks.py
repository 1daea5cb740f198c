"""Hooks: a connection switches to a real service; no connection means the embedded default."""

from __future__ import annotations

import json

import pytest

from mlflywheel_airflow.hooks import FeastHook, MlflowHook, ModelServerHook

pytestmark = pytest.mark.operators


def test_mlflow_connection_sets_tracking_uri_and_links(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(
        {"conn_type": "mlflow", "host": "mlflow.internal", "port": 5000, "extra": {"ui_url": "https://mlflow.example/"}}))
    hook = MlflowHook()
    assert hook.tracking_uri() == "http://mlflow.internal:5000"
    assert hook.workspace().tracking_uri == "http://mlflow.internal:5000"
    assert hook.workspace().registry_uri == "http://mlflow.internal:5000"
    assert hook.ui_url() == "https://mlflow.example"


def test_without_connection_the_embedded_store_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    hook = MlflowHook()
    assert hook.tracking_uri() is None
    assert hook.workspace().tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert hook.ui_url() == "http://127.0.0.1:5000"
    ok, message = hook.test_connection()
    assert ok, message


def test_feast_connection_points_at_another_repo(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_DEFAULT", json.dumps(
        {"conn_type": "feast", "extra": {"repo_path": str(tmp_path / "repo")}}))
    assert FeastHook().workspace().feature_repo == tmp_path / "repo"
    ok, message = FeastHook().test_connection()
    assert not ok and "feature_store.yaml not found" in message


@pytest.mark.parametrize(("conn", "expected"), [
    (None, "http://127.0.0.1:8000"),
    ({"conn_type": "modelserver", "host": "serving.internal", "port": 8080}, "http://serving.internal:8080"),
    ({"conn_type": "http", "host": "https://serving.example/"}, "https://serving.example"),
])
def test_model_server_url_from_the_connection(monkeypatch, conn, expected):
    if conn is None:
        monkeypatch.delenv("AIRFLOW_CONN_MODEL_SERVER_DEFAULT", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW_CONN_MODEL_SERVER_DEFAULT", json.dumps(conn))
    assert ModelServerHook().base_url() == expected


def test_model_server_connection_test_names_the_url(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MODEL_SERVER_DEFAULT", json.dumps({"conn_type": "http", "host": "127.0.0.1",
                                                                         "port": 9}))
    ok, message = ModelServerHook().test_connection()
    assert not ok and message == "http://127.0.0.1:9/v2/health/ready did not answer 200"


@pytest.mark.parametrize(("link", "result", "expected"), [
    ("run", {"experiment_id": "3", "run_id": "abc"}, "http://127.0.0.1:5000/#/experiments/3/runs/abc"),
    ("version", {"name": "fraud detector", "version": "4"}, "http://127.0.0.1:5000/#/models/fraud%20detector/versions/4"),
    ("run", {"run_id": "abc"}, ""),  # nothing to link to yet
])
def test_links_point_at_the_mlflow_ui(monkeypatch, link, result, expected):
    from unittest import mock

    from mlflywheel_airflow import links

    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.delenv("FLYWHEEL_MLFLOW_UI_URL", raising=False)
    cls = links.MlflowRunLink if link == "run" else links.MlflowModelVersionLink
    with mock.patch.object(links, "_result", return_value=result):
        assert cls().get_link(mock.Mock(mlflow_conn_id="mlflow_default"), ti_key=mock.Mock()) == expected


@pytest.mark.parametrize(("xcoms", "expected"), [
    # a passing validation returns the run; a failed one has no return value, only `validation_result`
    ({"return_value": {"experiment_id": "7", "run_id": "r1", "success": True}},
     "http://127.0.0.1:5000/#/experiments/7/runs/r1/artifactPath/validation/report.html"),
    ({"validation_result": {"experiment_id": "7", "run_id": "r2", "failures": []}},
     "http://127.0.0.1:5000/#/experiments/7/runs/r2/artifactPath/validation/report.html"),
    ({}, ""),
])
def test_validation_link_reads_the_failed_tasks_xcom(monkeypatch, xcoms, expected):
    from unittest import mock

    from mlflywheel_airflow import links

    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.delenv("FLYWHEEL_MLFLOW_UI_URL", raising=False)
    with mock.patch.object(links, "_result", side_effect=lambda ti_key, key="return_value": xcoms.get(key, {})):
        link = links.ValidationResultLink().get_link(mock.Mock(mlflow_conn_id="mlflow_default"), ti_key=mock.Mock())
    assert link == expected
