"""``<pipeline>__train`` end to end through Airflow (``dag.test()``) on embedded workspaces.

Each test group gets its own FLYWHEEL_HOME (landing zone, Feast, MLflow) and the session's
Airflow metadata DB; nothing is faked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlflywheel.services import tracking
from mlflywheel.services.config import load_pipeline
from mlflywheel.services.data.generate import inject_bad_data, write_landing
from mlflywheel.services.data.io import partition_path, write_parquet_atomic
from mlflywheel.services.names import (
    TAG_DECISION,
    TAG_DIGEST,
    TAG_NOTE,
    TAG_REASONS,
    TAG_RUN_KEY,
    TAG_TRIGGER,
)
from mlflywheel.services.settings import Workspace
from tests.helpers import run_dag

ROOT = Path(__file__).resolve().parents[2]
LAST_DAY = dt.date(2026, 6, 1)          # the first interval validates this day
LOGICAL = dt.datetime(2026, 6, 2, tzinfo=dt.UTC)
pytestmark = pytest.mark.integration


def _workspace(tmp_path_factory, monkeypatch, name: str, pipelines_dir: Path | None = None):
    home = tmp_path_factory.mktemp(f"ws-{name}")
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.setenv("FLYWHEEL_PIPELINES_DIR", str(pipelines_dir or ROOT / "include" / "pipelines"))
    ws = Workspace.from_env().ensure()
    config = load_pipeline(ws.pipelines_dir / f"{name}.yaml")
    write_landing(config, ws, start=LAST_DAY - dt.timedelta(days=34), end=LAST_DAY + dt.timedelta(days=2))
    return ws, config


def _run(config, logical: dt.datetime, conf: dict | None = None):
    state, states, _ = run_dag("flywheel_train.py", "build_train_dag", config, logical, conf)
    return state, states


def _links(dag_id: str) -> dict[tuple[str, str], str]:
    """Extra-link URLs Airflow stored for the DAG's runs (from its metadata DB)."""
    import sqlite3

    with sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db") as db:
        rows = db.execute("select task_id, key, value from xcom where dag_id = ? and key like '_link_%'", (dag_id,))
        return {(task, key): json.loads(value) for task, key, value in rows}


def _versions(ws, config):
    client = tracking.client(ws)
    return sorted(client.search_model_versions(f"name = '{config.model_name}'"), key=lambda v: int(v.version))


@pytest.fixture(scope="module")
def fraud(tmp_path_factory, airflow_db):
    with pytest.MonkeyPatch.context() as mp:
        ws, config = _workspace(tmp_path_factory, mp, "fraud")
        first = _run(config, LOGICAL, {"note": "integration test"})
        yield ws, config, first, mp


def test_first_run_registers_a_champion(fraud):
    ws, config, (state, states), _ = fraud
    assert state == "success", states
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the workspace's store did not leak
    assert states == {**dict.fromkeys(["validate", "feature_materialize", "train", "evaluate_gate", "register",
                                       "export_quantize", "benchmark", "batch_score"], "success"),
                      "deploy_canary": "skipped"}
    # a first model is already @champion: nothing to roll out, said in the deployment ledger
    (skip,) = [json.loads(line)
               for line in (ws.reports_dir / config.name / "deployments.jsonl").read_text().splitlines()]
    assert skip["event"] == "deploy_canary:skipped" and "already @champion" in skip["reason"]
    (version,) = _versions(ws, config)
    client = tracking.client(ws)
    mv = client.get_model_version(config.model_name, version.version)
    assert sorted(mv.aliases) == ["challenger", "champion"]
    key = tracking.run_key(config, LOGICAL - dt.timedelta(days=1), LOGICAL, config.training.window_days)
    assert mv.tags[TAG_RUN_KEY] == key
    run = client.get_run(mv.run_id)
    assert run.data.metrics["holdout_roc_auc"] > 0.85
    assert run.data.tags[TAG_DECISION] == "approved"
    assert run.data.tags[TAG_NOTE] == "integration test"
    assert run.data.tags[TAG_TRIGGER] == "manual"
    digest = mv.tags[TAG_DIGEST]
    assert digest == run.data.tags[TAG_DIGEST]
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [digest]
    snapshot = json.loads((ws.snapshots_dir / config.name / digest / "snapshot.json").read_text())
    assert snapshot["rows"] > 10_000 and snapshot["start"] == "2026-05-05" and snapshot["end"] == "2026-06-01"
    links = _links(config.train_dag_id)
    assert links[("train", "_link_MlflowRunLink")].endswith(f"/#/experiments/{run.info.experiment_id}/runs/{mv.run_id}")
    assert links[("register", "_link_MlflowModelVersionLink")].endswith(
        f"/#/models/{config.model_name}/versions/{mv.version}")
    verdict = json.loads(Path(client.download_artifacts(mv.run_id, "gate/verdict.json")).read_text())
    assert verdict["decision"] == "approved" and verdict["champion"] is None
    assert {c["name"] for c in verdict["checks"]} >= {"threshold.roc_auc.min", "output.no_nan",
                                                      "fairness.demographic_parity_difference"}
    # export_quantize: the version carries its ONNX graph, runnable through the registry alias
    assert json.loads(mv.tags["flywheel.onnx.fp32.parity"])["max_abs_diff"] < 1e-5
    assert mv.tags["flywheel.onnx.int8.published"] == "false"
    from mlflywheel.services.served import load_version

    model = load_version(ws, config.model_name, mv.version)
    assert model.sha256 == mv.tags["flywheel.onnx.fp32.sha256"]
    with tracking.active(ws):
        import mlflow

        graph = mlflow.onnx.load_model(f"models:/{config.model_name}@champion")
    assert [i.name for i in graph.graph.input] == config.feature_columns
    # benchmark: SLA verdict on the version, artifacts on the run
    assert mv.tags["flywheel.benchmark.decision"] == "approved"
    assert mv.tags["flywheel.serve_variant"] == "onnx-fp32@CPU"
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "benchmark")}
    assert artifacts == {"benchmark/verdict.json", "benchmark/table.md", "benchmark/latency.png"}
    bench = json.loads(Path(client.download_artifacts(mv.run_id, "benchmark/verdict.json")).read_text())
    assert {r["variant"] for r in bench["results"]} == {"native", "onnx-fp32@CPU"}
    assert {r["batch_size"] for r in bench["results"]} == {1, 32, 1024, 65536}
    # batch_score: the interval's day scored with @champion by spark-submit, published with its manifest
    manifest = json.loads((ws.predictions_root / config.name / f"ds={LAST_DAY}" / "_manifest.json").read_text())
    landing_rows = len(pd.read_parquet(partition_path(config, ws, LAST_DAY)))
    assert manifest["rows"] + manifest["quarantined_rows"] == manifest["input_rows"] == landing_rows
    assert manifest["model_version"] == str(mv.version) and manifest["variant"] == "onnx-fp32@CPU"
    predictions = pd.read_parquet(ws.predictions_root / config.name / f"ds={LAST_DAY}")
    assert len(predictions) == manifest["rows"] and predictions[config.data.id_column].is_unique
    assert set(predictions["model_version"]) == {str(mv.version)} and set(predictions["run_id"]) == {mv.run_id}


def test_rerun_of_the_same_interval_makes_no_new_version(fraud):
    ws, config, _, _ = fraud
    state, states = _run(config, LOGICAL)
    assert state == "success", states
    assert len(_versions(ws, config)) == 1
    client = tracking.client(ws)
    experiment = client.get_experiment_by_name(f"flywheel/{config.name}")
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    assert len(runs) == 1  # the training run was found by its run key, not repeated


def test_bad_landing_data_stops_before_training_and_keeps_the_champion(fraud):
    ws, config, _, _ = fraud
    champion_before = tracking.client(ws).get_model_version_by_alias(config.model_name, "champion").version
    path = partition_path(config, ws, LAST_DAY + dt.timedelta(days=1))
    write_parquet_atomic(inject_bad_data(pd.read_parquet(path), "duplicate_ids", id_column=config.data.id_column,
                                         timestamp=config.data.timestamp), path)
    state, states = _run(config, LOGICAL + dt.timedelta(days=1))
    assert state == "failed"
    assert states["validate"] == "failed"
    assert {states[t] for t in ("feature_materialize", "train", "evaluate_gate", "register", "export_quantize",
                                 "benchmark", "deploy_canary", "batch_score")} == {"upstream_failed"}
    assert len(_versions(ws, config)) == 1
    assert tracking.client(ws).get_model_version_by_alias(config.model_name, "champion").version == champion_before
    result = json.loads((ws.reports_dir / config.name / "validation" / "2026-06-02_2026-06-02.json").read_text())
    assert [f["expectation"] for f in result["failures"]] == ["expect_column_values_to_be_unique"]


@pytest.fixture(scope="module")
def strict_fraud(tmp_path_factory, airflow_db):
    """The fraud pipeline with a ROC AUC bar no model reaches."""
    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "fraud.yaml").read_text())
    raw["gate"]["thresholds"]["roc_auc"] = {"min": 0.9999}
    raw["registry"]["model_name"] = "fraud_strict"
    folder = tmp_path_factory.mktemp("strict-pipelines")
    (folder / "fraud.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        ws, config = _workspace(tmp_path_factory, mp, "fraud", pipelines_dir=folder)
        yield ws, config, _run(config, LOGICAL)


def test_gate_rejection_is_a_decision_that_skips_register(strict_fraud):
    ws, config, (state, states) = strict_fraud
    assert states["evaluate_gate"] == "success"
    assert states["register"] == states["export_quantize"] == states["benchmark"] == states["deploy_canary"] \
        == "skipped"
    # batch_score still runs after a rejection (the champion scores the day), but no model was ever
    # approved here: there is no @champion to score with, which fails the run loudly.
    assert states["batch_score"] == "failed" and state == "failed"
    assert not (ws.predictions_root / config.name).exists()
    client = tracking.client(ws)
    assert client.search_model_versions(f"name = '{config.model_name}'") == []
    experiment = client.get_experiment_by_name(f"flywheel/{config.name}")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags[TAG_DECISION] == "rejected"
    assert "threshold.roc_auc.min" in run.data.tags[TAG_REASONS]


def test_second_dataset_runs_through_the_same_factory(tmp_path_factory, airflow_db):
    with pytest.MonkeyPatch.context() as mp:
        ws, config = _workspace(tmp_path_factory, mp, "ctr")
        state, states = _run(config, LOGICAL)
        assert state == "success", states
        (version,) = _versions(ws, config)
        client = tracking.client(ws)
        assert sorted(client.get_model_version(config.model_name, version.version).aliases) == [
            "challenger", "champion"]
        run = client.get_run(version.run_id)
        assert run.data.params["trainer"] == "sklearn_logreg"
        assert run.data.params["label"] == "clicked"


def test_inference_scores_with_the_alias_on_cpu_without_failing(fraud, tmp_path):
    from mlflywheel.services.errors import RegistryError, SchemaMismatch
    from mlflywheel.services.infer import score_parquet
    from mlflywheel.services.registry import alias_version
    from mlflywheel.services.served import load_version

    ws, config, _, _ = fraud
    (snapshot,) = ws.snapshots_dir.joinpath(config.name).glob("*/frame.parquet")
    out = tmp_path / "scores.parquet"
    summary = score_parquet(config, ws, alias="champion", input_path=snapshot, output_path=out, batch_size=5000)
    scored = pd.read_parquet(out)
    frame = pd.read_parquet(snapshot)
    assert summary["rows"] == len(scored) == len(frame)
    assert summary["provider"] == "CPUExecutionProvider"  # asked for CUDA first: no GPU here, no failure
    champion = str(alias_version(tracking.client(ws), config.model_name, "champion").version)
    assert set(scored["model_version"]) == {champion}
    expected = load_version(ws, config.model_name, champion).predict_proba(frame)
    assert (scored["transaction_id"] == frame["transaction_id"]).all()
    assert abs(scored["score"].to_numpy() - expected).max() < 1e-6
    landing = partition_path(config, ws, LAST_DAY)
    with pytest.raises(SchemaMismatch, match=r"lacks model input column\(s\) \['amount_count_1d'"):
        score_parquet(config, ws, alias="champion", input_path=landing, output_path=tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()
    with pytest.raises(RegistryError, match="fraud_detector@nope does not exist"):
        score_parquet(config, ws, alias="nope", input_path=snapshot, output_path=tmp_path / "x.parquet")


def test_summary_reports_every_step_of_the_run(fraud):
    from mlflywheel.tools.summary import format_summary, run_summary

    ws, config, _, _ = fraud
    summary = run_summary(config, ws, start=LOGICAL - dt.timedelta(days=1), end=LOGICAL)
    assert summary["validation"]["success"] and summary["validation"]["rows"] > 1000
    assert summary["gate"]["decision"] == "approved"
    assert summary["registry"]["aliases"] == ["challenger", "champion"]
    assert summary["export"]["fp32"] < 1e-5 and "MatMul/Gemm" in summary["export"]["int8"]
    assert summary["benchmark"]["serve_variant"] == "onnx-fp32@CPU"
    text = format_summary(summary, ws)
    assert f"registered     {config.model_name} v1  aliases: @challenger, @champion" in text
    assert "benchmark      APPROVED: serve onnx-fp32@CPU" in text
    assert summary["batch"]["model"] == f"{config.model_name} v1" and summary["batch"]["rows"] > 1000
    assert f"batch scored   {summary['batch']['rows']} rows (0 quarantined) with {config.model_name} v1" in text


def _fraud_trained_by(tmp_path_factory, trainer: str, params: dict, model_name: str) -> Path:
    """A pipelines folder with the shipped fraud pipeline, trained by ``trainer``, registered as ``model_name``."""
    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "fraud.yaml").read_text())
    raw["training"].update(trainer=trainer, params=params)
    raw["registry"]["model_name"] = model_name
    folder = tmp_path_factory.mktemp(f"{model_name}-pipelines")
    (folder / "fraud.yaml").write_text(yaml.safe_dump(raw))
    return folder


def _first_model(ws, config):
    """One training run of a new model: every task succeeds, ``deploy_canary`` skips (the first model is
    already @champion); the one version it registered."""
    state, states = _run(config, LOGICAL)
    assert state == "success", states
    assert states.pop("deploy_canary") == "skipped"
    assert set(states.values()) == {"success"}
    (version,) = _versions(ws, config)
    return tracking.client(ws).get_model_version(config.model_name, version.version)


def test_pytorch_trainer_runs_the_same_dag_through_benchmark(tmp_path_factory, airflow_db):
    folder = _fraud_trained_by(tmp_path_factory, "torch_mlp", {"hidden": "32,16", "max_epochs": 12}, "fraud_mlp")
    with pytest.MonkeyPatch.context() as mp:
        ws, config = _workspace(tmp_path_factory, mp, "fraud", pipelines_dir=folder)
        mv = _first_model(ws, config)
        client = tracking.client(ws)
        assert client.get_run(mv.run_id).data.params["trainer"] == "torch_mlp"
        assert json.loads(mv.tags["flywheel.onnx.fp32.parity"])["max_abs_diff"] < 1e-5
        int8 = mv.tags["flywheel.onnx.int8.published"]
        assert int8 == "true" or mv.tags["flywheel.onnx.int8.reason"].startswith("parity (")
        assert mv.tags["flywheel.onnx.int8.method"] == "static-qdq (2000 calibration rows)"
        assert mv.tags["flywheel.benchmark.decision"] == "approved"
        assert mv.tags["flywheel.serve_variant"].startswith("onnx-")


def test_a_teams_own_trainer_outside_the_package_runs_the_whole_dag(tmp_path_factory, airflow_db):
    """examples/team_models: a module and a pipeline YAML of a team's own, nothing changed in include/."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "examples"))
        ws, config = _workspace(tmp_path_factory, mp, "fraud", pipelines_dir=ROOT / "examples" / "team_models" /
                                "pipelines")
        assert config.training.trainer == "team_models.fraud_gbm:train"
        mv = _first_model(ws, config)
        client = tracking.client(ws)
        run = client.get_run(mv.run_id)
        assert run.data.params["trainer"] == "team_models.fraud_gbm:train"
        assert run.data.params["model.n_estimators"] == "80"
        assert run.data.tags["flywheel.gate.decision"] == "approved"
        assert sorted(mv.aliases) == ["challenger", "champion"]
        assert json.loads(mv.tags["flywheel.onnx.fp32.parity"])["max_abs_diff"] < 1e-5
        scored = pd.read_parquet(ws.predictions_root / config.name / f"ds={LAST_DAY}")
        assert len(scored) > 1000 and set(scored["model_version"]) == {str(mv.version)}
        # the same interval again: the run and the version are found, not made twice
        state, _ = _run(config, LOGICAL)
        assert state == "success" and len(_versions(ws, config)) == 1


def test_the_xgboost_trainer_runs_the_whole_dag(tmp_path_factory, airflow_db):
    """The built-in ``xgboost``: gate, registry, ONNX within parity, the benchmark against XGBoost's own predict."""
    folder = _fraud_trained_by(tmp_path_factory, "xgboost", {"n_estimators": 120, "max_depth": 5}, "fraud_xgb")
    with pytest.MonkeyPatch.context() as mp:
        ws, config = _workspace(tmp_path_factory, mp, "fraud", pipelines_dir=folder)
        mv = _first_model(ws, config)
        client = tracking.client(ws)
        assert client.get_run(mv.run_id).data.params["trainer"] == "xgboost"
        assert json.loads(mv.tags["flywheel.onnx.fp32.parity"])["max_abs_diff"] < 1e-5
        assert mv.tags["flywheel.benchmark.decision"] == "approved"
        verdict = json.loads(Path(client.download_artifacts(mv.run_id, "benchmark/verdict.json")).read_text())
        assert {r["variant"] for r in verdict["results"]} >= {"native", "onnx-fp32@CPU"}
