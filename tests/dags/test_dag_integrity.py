"""DAG integrity through a real DagBag: no import errors, the exact graph, schedule, docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflywheel.services.config import APPROVED_TAGS, load_pipelines

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = load_pipelines(ROOT / "include" / "pipelines")
TASKS = ["validate", "feature_materialize", "train", "evaluate_gate", "register", "export_quantize", "benchmark",
         "deploy_canary", "batch_score"]
pytestmark = pytest.mark.dags


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_training_dag_per_pipeline(dagbag):
    assert sorted(d for d in dagbag.dag_ids if d.endswith("__train")) == sorted(c.train_dag_id for c in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_task_graph_is_the_documented_chain(dagbag, config):
    dag = dagbag.dags[config.train_dag_id]
    assert sorted(dag.task_ids) == sorted(TASKS)
    for upstream, downstream in zip(TASKS, TASKS[1:], strict=False):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    assert dag.get_task(TASKS[-1]).downstream_task_ids == set()
    # the champion still scores the day when a gate skipped the steps before batch_score
    assert dag.get_task("batch_score").trigger_rule == "none_failed"
    assert dag.get_task("batch_score")._conn_id == "spark_default"
    deploy = dag.get_task("deploy_canary")
    assert deploy.trigger_rule == "all_success" and deploy.model_server_conn_id == "model_server_default"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_dag_settings(dagbag, config):
    dag = dagbag.dags[config.train_dag_id]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert set(dag.tags) <= APPROVED_TAGS and {"mlflywheel", "training"} <= set(dag.tags)
    assert dag.doc_md and "evaluate_gate" in dag.doc_md
    assert dag.start_date.year == int(config.schedule.start_date[:4])
    for task in dag.tasks:
        assert task.owner == config.owner
        assert task.doc_md, task.task_id
    assert dag.get_task("train").retries == config.retries
    assert dag.get_task("validate").retries == 1  # only late data is retried; bad data fails at once


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_schedule_is_nightly_cron_or_drift_asset(dagbag, config):
    from airflow.sdk import AssetOrTimeSchedule

    dag = dagbag.dags[config.train_dag_id]
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert dag.timetable.timetable.expression == config.schedule.cron
    assert dag.timetable.timetable.interval.days == 1
    uris = [asset.uri for asset in dag.timetable.asset_condition.objects]
    assert uris == [config.drift_asset_uri]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_manual_trigger_params_are_validated(dagbag, config):
    from airflow.sdk.definitions.param import ParamValidationError

    dag = dagbag.dags[config.train_dag_id]
    params = dag.params
    assert params["training_window_days"] == config.training.window_days
    assert params["note"] == ""
    window = params.get_param("training_window_days")
    with pytest.raises(ParamValidationError):
        window.resolve(config.training.holdout_days)  # too short to leave a training part
    with pytest.raises(ParamValidationError):
        window.resolve("four weeks")
    assert window.resolve(30) == 30


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_batch_dag_scores_a_chosen_day_with_a_chosen_alias(dagbag, config):
    dag = dagbag.dags[config.batch_dag_id]
    assert dag.task_ids == ["batch_score"]
    assert (dag.timetable.__class__.__name__ == "NullTimetable") is (config.batch.schedule is None)
    assert set(dag.tags) <= APPROVED_TAGS and {"mlflywheel", "batch"} <= set(dag.tags)
    assert dag.doc_md and dag.get_task("batch_score").doc_md
    assert dag.params["alias"] == config.batch.alias
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError):
        dag.params.get_param("day").resolve("June 1st")
    assert dag.params.get_param("day").resolve("2026-06-01") == "2026-06-01"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_rollback_dag_is_manual_and_asks_for_a_reason(dagbag, config):
    from airflow.sdk.definitions.param import ParamValidationError

    dag = dagbag.dags[config.rollback_dag_id]
    assert dag.task_ids == ["rollback"] and dag.timetable.__class__.__name__ == "NullTimetable"
    assert dag.doc_md and dag.get_task("rollback").doc_md and dag.get_task("rollback").retries == 0
    with pytest.raises(ParamValidationError):
        dag.params.get_param("reason").resolve("")
    with pytest.raises(ParamValidationError):
        dag.params.get_param("to_version").resolve("v2")
    assert dag.params.get_param("to_version").resolve("") == ""



def test_every_dag_is_documented_tagged_and_owned(dagbag):
    """What a person sees in the UI: Markdown docs, approved tags, an owner, docs on each task."""
    assert len(dagbag.dags) >= 4 * len(CONFIGS) + 1
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and dag.doc_md.lstrip().startswith("#"), dag_id
        assert "mlflywheel" in dag.tags and set(dag.tags) <= APPROVED_TAGS, (dag_id, dag.tags)
        for task in dag.tasks:
            assert task.owner not in ("", "airflow"), (dag_id, task.task_id, task.owner)
            assert task.doc_md, (dag_id, task.task_id)


def test_example_dag_uses_three_operators(dagbag):
    dag = dagbag.dags["example_fraud_daily"]
    kinds = {t.task_id: type(t).__name__ for t in dag.tasks}
    assert kinds == {"validate": "ValidateDataOperator", "score": "BatchScoreOperator",
                     "drift_check": "DriftCheckOperator"}
    assert dag.get_task("validate").downstream_task_ids == {"score", "drift_check"}


# --- task id = operator module = stage module ---------------------------------------------
def test_the_training_dag_is_its_stages_table(dagbag):
    """The table in dags/flywheel_train.py is the DAG: order, operators, and who feeds whom."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("flywheel_train_table", ROOT / "dags" / "flywheel_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert [row[0] for row in module.STAGES] == TASKS
    dag = dagbag.dags[CONFIGS[0].train_dag_id]
    for task_id, operator, upstream_as, _ in module.STAGES:
        task = dag.get_task(task_id)
        assert type(task).__name__ == operator.__name__
        if upstream_as is not None:
            assert upstream_as in task.template_fields, (task_id, upstream_as)


@pytest.mark.parametrize("task_id", TASKS + ["drift_check", "emit_trigger", "rollback"])
def test_each_task_id_names_its_operator_module_and_its_stage(dagbag, task_id):
    """``<task id>``: ``mlflywheel_airflow/operators/<task id>.py`` and ``mlflywheel/stages/<task id>``
    (``emit_trigger`` sends the drift check's event: it has an operator and no stage of its own)."""
    tasks = [t for dag in dagbag.dags.values() for t in dag.tasks if t.task_id == task_id]
    assert tasks, task_id
    for task in tasks:
        assert type(task).__module__ == f"mlflywheel_airflow.operators.{task_id}"
    stage = ROOT / "include" / "mlflywheel" / "stages"
    if task_id != "emit_trigger":
        assert (stage / f"{task_id}.py").is_file() or (stage / task_id / "__init__.py").is_file()


def test_a_broken_pipeline_yaml_is_an_import_error_naming_it_and_the_others_still_load(tmp_path, monkeypatch):
    import shutil

    from airflow.dag_processing.dagbag import DagBag

    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    shutil.copy(ROOT / "include" / "pipelines" / f"{CONFIGS[0].name}.yaml", pipelines)
    (pipelines / "typo.yaml").write_text("name: typo\nowner: [not, a, string\n")
    monkeypatch.setenv("FLYWHEEL_PIPELINES_DIR", str(pipelines))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "flywheel_train.py"))
    assert list(bag.dag_ids) == [CONFIGS[0].train_dag_id]
    [error] = bag.import_errors.values()
    assert "typo.yaml" in error and "not valid YAML" in error
