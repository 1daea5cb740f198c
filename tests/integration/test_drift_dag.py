"""``<pipeline>__drift`` through Airflow (``dag.test()``) on an embedded workspace with a real champion.

The workspace holds 69 normal days, then the holiday scenario from 2026-06-02, and labels that
land three to four days after their transactions. The champion is trained on 2026-05-05..06-01
by the core steps of the training DAG (that DAG has its own integration tests). Nothing is
faked: Feast, MLflow, ONNX Runtime, Evidently and the Airflow metadata DB are all real.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from pathlib import Path

import pytest

from mlflywheel.services import tracking
from mlflywheel.services.config import load_pipeline
from mlflywheel.services.settings import Workspace
from tests.helpers import run_dag, train_champion

ROOT = Path(__file__).resolve().parents[2]
TRAINED_UNTIL = dt.date(2026, 6, 2)       # the champion's snapshot ends the day before
HOLIDAY_FROM = dt.date(2026, 6, 2)
pytestmark = pytest.mark.integration


def _at(day: int, hour: int = 1) -> dt.datetime:
    return dt.datetime(2026, 6, day, hour, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def drift_ws(tmp_path_factory, airflow_db):
    from mlflywheel.services.data.generate import write_landing
    from mlflywheel.services.data.labels import write_labels

    home = tmp_path_factory.mktemp("ws-drift")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(home))
        mp.setenv("FLYWHEEL_PIPELINES_DIR", str(ROOT / "include" / "pipelines"))
        ws = Workspace.from_env().ensure()
        config = load_pipeline(ws.pipelines_dir / "fraud.yaml")
        # 28 training days plus a full 30-day history for the longest aggregate
        write_landing(config, ws, start=TRAINED_UNTIL - dt.timedelta(days=69), end=HOLIDAY_FROM)
        write_landing(config, ws, start=HOLIDAY_FROM, end=HOLIDAY_FROM + dt.timedelta(days=8), scenario="holiday")
        write_labels(config, ws, start=TRAINED_UNTIL - dt.timedelta(days=69), end=HOLIDAY_FROM + dt.timedelta(days=8),
                     delay_days=config.drift.live.label_delay_days)
        train_champion(ws, config, TRAINED_UNTIL)
        yield ws, config


def _run(config, logical: dt.datetime, conf: dict | None = None):
    return run_dag("flywheel_drift.py", "build_drift_dag", config, logical, conf)


def _db(query: str, *args):
    with sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db") as db:
        return db.execute(query, args).fetchall()


def _events(uri: str) -> list[dict]:
    rows = _db("select e.extra from asset_event e join asset a on a.id = e.asset_id where a.uri = ? order by e.id", uri)
    return [json.loads(extra) for (extra,) in rows]


def _result(dag_id: str, run_id: str, task_id: str = "drift_check") -> dict:
    ((value,),) = _db("select value from xcom where dag_id = ? and run_id = ? and task_id = ? and key = 'return_value'",
                      dag_id, run_id, task_id)
    return json.loads(value)


def test_a_normal_day_is_judged_no_drift_and_emits_nothing(drift_ws):
    ws, config = drift_ws
    state, states, run_id = _run(config, _at(2, 1))
    assert state == "success", states
    assert states == {"drift_check": "success", "emit_trigger": "skipped"}
    result = _result(config.drift_dag_id, run_id)
    assert result["decision"] == "no_drift", result
    assert result["window"]["days"] == ["2026-06-01"] and result["window"]["rows"] > 1000
    assert result["drifted_features"] == {} and result["evidently"]["agree"] is True
    assert _events(config.drift_asset_uri) == []
    verdict = json.loads(Path(result["verdict_path"]).read_text())
    assert verdict["decision"] == "no_drift" and len(verdict["columns"]) == len(config.feature_columns)


def test_holiday_drift_emits_the_event_that_queues_the_training_dag(drift_ws):
    ws, config = drift_ws
    # Deployed DAGs are unpaused; Airflow queues asset-triggered runs only for those.
    with sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db") as db:
        assert db.execute("update dag set is_paused = 0 where dag_id = ?", (config.train_dag_id,)).rowcount == 1
    state, states, run_id = _run(config, _at(4, 1))
    assert state == "success", states
    assert states == {"drift_check": "success", "emit_trigger": "success"}
    result = _result(config.drift_dag_id, run_id)
    assert result["decision"] == "retrain"
    assert {"amount", "merchant_category"} <= set(result["drifted_features"])
    assert result["evidently"]["agree"] is True  # Evidently, on the same limits, names the same columns
    # the verdict was written (and the trigger recorded) before the event left
    verdict = json.loads(Path(result["verdict_path"]).read_text())
    assert verdict["decision"] == "retrain" and verdict["reasons"] == result["reasons"]
    (event,) = _events(config.drift_asset_uri)
    assert event["check_id"] == result["check_id"] == "fraud/20260604T0100Z"
    assert event["reason"].startswith("data drift: ")
    assert event["retrain_window_days"] == config.drift.retrain_window_days
    assert event["champion_version"] == "1"
    assert event["report_uri"] == f"runs:/{result['run_id']}/drift/report.html"
    assert {"amount", "merchant_category"} <= set(event["drifted_features"])
    # Airflow queued the training DAG, which is scheduled on this asset
    queued = _db("select q.target_dag_id from asset_dag_run_queue q join asset a on a.id = q.asset_id "
                 "where a.uri = ?", config.drift_asset_uri)
    assert (config.train_dag_id,) in queued
    # the report is one click away, and in MLflow
    ((link,),) = _db("select value from xcom where dag_id = ? and run_id = ? and key = '_link_DriftReportLink'",
                     config.drift_dag_id, run_id)
    assert json.loads(link).endswith(f"/runs/{result['run_id']}/artifactPath/drift/report.html")
    client = tracking.client(ws)
    run = client.get_run(result["run_id"])
    assert run.data.tags["flywheel.drift.decision"] == "retrain"
    assert {a.path for a in client.list_artifacts(result["run_id"], "drift")} == {
        "drift/report.html", "drift/verdict.json", "drift/history.png"}
    assert run.data.metrics["drift.amount.psi"] > config.drift.limits.psi
    # history: one file per check, whether or not it drifted, and the chart
    history = sorted((ws.reports_dir / "fraud" / "drift" / "history").glob("*.parquet"))
    assert [p.stem for p in history] == ["fraud_20260602T0100Z", "fraud_20260604T0100Z"]
    assert Path(result["history_png"]).stat().st_size > 10_000


def test_cooldown_suppresses_a_second_trigger(drift_ws):
    ws, config = drift_ws
    state, states, run_id = _run(config, _at(4, 5))
    assert state == "success", states
    assert states == {"drift_check": "success", "emit_trigger": "skipped"}
    result = _result(config.drift_dag_id, run_id)
    assert result["decision"] == "suppressed" and result["reasons"]
    assert result["detail"].startswith("cooldown: the last retrain trigger (fraud/20260604T0100Z) was 4.0 h ago")
    assert len(_events(config.drift_asset_uri)) == 1


def test_delayed_label_degradation_triggers(drift_ws):
    from mlflywheel.stages.drift_check.check import run_drift_check

    ws, config = drift_ws
    result = run_drift_check(config, ws, as_of=_at(9, 1), with_report=False)
    live = result["live"]
    assert live["status"] == "evaluated"
    assert live["days"] == ["2026-06-02", "2026-06-03", "2026-06-04"]  # matured, after the training window
    assert live["baseline"]["pr_auc"] > 0.7
    assert any(r.startswith("live metrics: live pr_auc") for r in result["reasons"]), result["reasons"]
    assert "live:pr_auc" in result["signature"]
    assert result["decision"] == "retrain"  # a new kind of trigger, and the cooldown is over


def test_bad_inputs_give_a_clear_outcome(drift_ws):
    from mlflywheel.services.errors import DriftInputError
    from mlflywheel.stages.drift_check.check import run_drift_check

    ws, config = drift_ws
    stale = run_drift_check(config, ws, as_of=dt.datetime(2026, 7, 1, tzinfo=dt.UTC), with_report=False)
    assert stale["decision"] == "skipped"
    assert stale["detail"].startswith("newest landing partition is 2026-06-09, 22 days before 2026-07-01")
    with pytest.raises(DriftInputError, match=r"snapshots/fraud/0000/frame.parquet: reference snapshot not found"):
        run_drift_check(config, ws, as_of=_at(4), reference="0000")
    state, states, _ = _run(config, _at(4, 7), {"reference": "0000"})
    assert state == "failed" and states == {"drift_check": "failed", "emit_trigger": "upstream_failed"}


def test_cli_drift_check_prints_the_verdict(drift_ws, capsys):
    from mlflywheel.tools.cli import main

    assert main(["drift", "check", "--pipeline", "fraud", "--as-of", "2026-07-01T00:00:00+00:00",
                 "--no-report"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["decision"] == "skipped" and printed["check_id"] == "fraud/20260701T0000Z"
    assert main(["drift", "check", "--reference", "0000"]) == 2  # a clear error, not a traceback
    assert "reference snapshot not found" in capsys.readouterr().err
