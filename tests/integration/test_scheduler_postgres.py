"""The real scheduler on Postgres: ``flywheel up`` with a fresh Postgres metadata database and
the LocalExecutor at parallelism 4, two DAG runs triggered through the REST API at once
(``fraud__batch_score`` and ``ctr__batch_score``, each a Spark job scoring one day with its
``@champion``), both run by the scheduler to ``success`` with their task instances overlapping
in time. No ``dags test``: the scheduler queues, the executor runs, the tasks talk to the
Execution API of the stack's api-server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.parse

import pytest

from tests.integration.local_stack import running_stack
from tests.integration.stack import postgres_database

pytestmark = pytest.mark.integration

PG = {"host": os.environ.get("FLYWHEEL_TEST_PG_HOST", "127.0.0.1"),
      "port": int(os.environ.get("FLYWHEEL_TEST_PG_PORT", "5432")),
      "user": os.environ.get("FLYWHEEL_TEST_PG_USER", "postgres")}
LAST_DAY = dt.date(2026, 6, 1)  # the day scored; data up to and including it
PIPELINES = ("fraud", "ctr")


@pytest.fixture
def postgres_db():
    """A fresh database (dropped afterwards, sessions and all); yields its SQLAlchemy URL and name."""
    with postgres_database("flywheel_sched") as uri:
        yield uri.replace("postgresql://", "postgresql+psycopg2://", 1), uri.rsplit("/", 1)[1]


@pytest.fixture
def champions(tmp_path, monkeypatch):
    """A workspace with sample data for both pipelines and a registered, exported ``@champion`` each."""
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.data.generate import write_landing
    from mlflywheel.services.settings import Workspace
    from tests.helpers import train_champion

    home = tmp_path / "home"
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    ws = Workspace.from_env().ensure()
    versions = {}
    for name in PIPELINES:
        config = load_pipeline(ws.pipelines_dir / f"{name}.yaml")
        write_landing(config, ws, start=LAST_DAY - dt.timedelta(days=config.training.window_days + 2),
                      end=LAST_DAY + dt.timedelta(days=1))
        versions[name] = train_champion(ws, config, LAST_DAY)["version"]
    return home, versions


def _overlap(a: dict, b: dict) -> bool:
    start_a, end_a, start_b, end_b = (dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
                                      for v in (a["start_date"], a["end_date"], b["start_date"], b["end_date"]))
    return start_a < end_b and start_b < end_a


def test_scheduler_runs_two_dags_in_parallel_on_postgres(champions, postgres_db):
    import psycopg2

    home, versions = champions
    url, db_name = postgres_db
    extra = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url, "AIRFLOW__CORE__PARALLELISM": "4",
             "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4"}
    with running_stack(home, extra) as st:
        # the metadata DB really is the fresh Postgres database, migrated by `up`
        with psycopg2.connect(dbname=db_name, **PG) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM dag WHERE dag_id = ANY(%s)",
                        ([f"{p}__batch_score" for p in PIPELINES],))
            assert cur.fetchone()[0] == 2
        assert not (home / "airflow" / "airflow.db").exists()

        token = st.token()
        runs = {}
        for name in PIPELINES:
            dag_id = f"{name}__batch_score"
            st.api("PATCH", f"/dags/{dag_id}", {"is_paused": False}, token=token)
            run = st.api("POST", f"/dags/{dag_id}/dagRuns",
                         {"logical_date": None, "conf": {"day": LAST_DAY.isoformat()},
                          "note": "scheduler test"}, token=token)
            assert run["state"] == "queued", run
            runs[dag_id] = run["dag_run_id"]

        done = {dag_id: st.wait_run(dag_id, run_id, timeout=1200) for dag_id, run_id in runs.items()}
        tis = {}
        for dag_id, run in done.items():
            assert run["state"] == "success"
            assert {ti["task_id"]: ti["state"] for ti in run["task_instances"]} == {"batch_score": "success"}
            tis[dag_id] = run["task_instances"][0]
            # each task ran in a process of this stack's executor, against its Execution API
            assert tis[dag_id]["executor"] in (None, "LocalExecutor"), tis[dag_id]
        a, b = tis.values()
        for dag_id, ti in tis.items():
            print(f"{dag_id}: batch_score {ti['start_date']} .. {ti['end_date']}")  # shown with -s
        assert _overlap(a, b), f"the two task instances did not overlap: {a['start_date']}..{a['end_date']} " \
                               f"and {b['start_date']}..{b['end_date']}"

        # what the tasks did: one published partition per pipeline for the day, scored with the champion
        for name in PIPELINES:
            quoted = urllib.parse.quote(runs[f"{name}__batch_score"], safe="")
            result = st.api("GET", f"/dags/{name}__batch_score/dagRuns/{quoted}/taskInstances/batch_score/"
                                   "xcomEntries/return_value", token=token)["value"]
            result = result if isinstance(result, dict) else json.loads(result)
            assert str(result["model_version"]) == versions[name], result
            assert list(result["days"]) == [LAST_DAY.isoformat()] and result["rows"] > 0, result
            manifest = json.loads((home / "predictions" / name / f"ds={LAST_DAY}" / "_manifest.json").read_text())
            assert (manifest["rows"], str(manifest["model_version"])) == (result["rows"], versions[name])
