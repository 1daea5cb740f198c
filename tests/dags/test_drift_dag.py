"""``<pipeline>__drift`` through a real DagBag: one per pipeline, the graph, schedule, params, outlet."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflywheel.services.config import APPROVED_TAGS, load_pipelines

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = load_pipelines(ROOT / "include" / "pipelines")
pytestmark = pytest.mark.dags


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_one_drift_dag_per_pipeline_without_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(d for d in dagbag.dag_ids if d.endswith("__drift")) == sorted(c.drift_dag_id for c in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_check_then_emit_with_the_drift_asset_as_outlet(dagbag, config):
    dag = dagbag.dags[config.drift_dag_id]
    assert sorted(dag.task_ids) == ["drift_check", "emit_trigger"]
    assert dag.get_task("emit_trigger").upstream_task_ids == {"drift_check"}
    assert [a.uri for a in dag.get_task("emit_trigger").outlets] == [config.drift_asset_uri]
    assert dag.get_task("drift_check").outlets == []  # only the emitting task can produce an event
    # the asset the training DAG is scheduled on is the one emitted here
    train = dagbag.dags[config.train_dag_id]
    assert [a.uri for a in train.timetable.asset_condition.objects] == [config.drift_asset_uri]
    names = {a.name for a in dag.get_task("emit_trigger").outlets}
    assert names == {a.name for a in train.timetable.asset_condition.objects}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_settings_schedule_and_params(dagbag, config):
    from airflow.sdk.definitions.param import ParamValidationError

    dag = dagbag.dags[config.drift_dag_id]
    assert dag.timetable.expression == config.drift.schedule == "0 * * * *"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert set(dag.tags) <= APPROVED_TAGS and {"mlflywheel", "drift"} <= set(dag.tags)
    assert dag.doc_md and "emit_trigger" in dag.doc_md
    for task in dag.tasks:
        assert task.owner == config.owner
        assert task.doc_md, task.task_id
    assert dag.get_task("emit_trigger").retries == 0
    assert dag.params["window_days"] == config.drift.window_days
    assert dag.params["reference"] == "champion"
    with pytest.raises(ParamValidationError):
        dag.params.get_param("window_days").resolve(0)
    check = dag.get_task("drift_check")
    assert (check.window_days, check.reference) == ("{{ params.window_days }}", "{{ params.reference }}")
