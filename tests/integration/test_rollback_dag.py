"""``<pipeline>__rollback`` through Airflow (``dag.test()``) on a real SQLite MLflow registry."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mlflywheel.services import deployments, tracking
from mlflywheel.services.settings import Workspace
from tests import helpers
from tests.helpers import run_dag

pytestmark = pytest.mark.integration


def test_the_ui_rollback_restores_the_previous_champion_and_refuses_a_bad_target(
        tmp_path, monkeypatch, airflow_db, ctr_onnx):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    ws = Workspace.from_env().ensure()
    config = ctr_onnx.config
    v1, v2 = (helpers.publish_onnx_version(ws, config, ctr_onnx.files[v]) for v in ("1", "2"))
    client = tracking.client(ws)
    client.set_registered_model_alias(config.model_name, "champion", v2)
    client.set_registered_model_alias(config.model_name, "previous_champion", v1)
    when = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

    state, states, _ = run_dag("flywheel_rollback.py", "build_rollback_dag", config, when,
                               {"reason": "v2 scores drifted"})
    assert (state, states) == ("success", {"rollback": "success"})
    assert str(client.get_model_version_by_alias(config.model_name, "champion").version) == v1
    last = json.loads(deployments.ledger_path(ws, config).read_text().splitlines()[-1])
    assert (last["champion"], last["reason"]) == (v1, "v2 scores drifted")

    state, states, _ = run_dag("flywheel_rollback.py", "build_rollback_dag", config,
                               when + dt.timedelta(hours=1), {"reason": "typo", "to_version": "99"})
    assert (state, states) == ("failed", {"rollback": "failed"})
    assert str(client.get_model_version_by_alias(config.model_name, "champion").version) == v1
