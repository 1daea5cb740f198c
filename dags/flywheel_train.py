"""
# `<pipeline>__train`: from landing data to a registered model

One DAG per pipeline config in `include/pipelines/*.yaml`, built by the same factory.
Adding a model is adding a YAML (plus its Feast view and expectation suite), no Python.

| task | what it does | on failure |
|---|---|---|
| `validate` | Great Expectations suite on the interval's landing partitions | fails without retries, lists failed expectations |
| `feature_materialize` | Feast apply + materialize; point-in-time training snapshot with a digest | retries (I/O) |
| `train` | fits the configured model, MLflow run with params, metrics, dataset, model | retries |
| `evaluate_gate` | thresholds, fairness, output checks, no regression vs `@champion`; verdict JSON first | rejection skips what follows |
| `register` | model version found by run key (never twice), alias `challenger` (first model: `champion`) | |
| `export_quantize` | ONNX fp32 (+ INT8 where the graph has MatMul/Gemm), parity-checked, added to the version | fp32 off parity fails with the numbers |
| `benchmark` | ONNX variants vs the native model (latency p50/p95/p99, rows/s by batch), SLA, variant to serve | an SLA miss skips what follows |
| `deploy_canary` | the approved version goes live on the model server as `@canary` in steps (default 5, 20, 50, 100 %), judged at each step against `@champion` on live traffic (errors, p99, score PSI, labels); waits are deferred | a failing step rolls back (a decision: the task succeeds, the champion never changed); no server, no champion or a first model: skipped with the reason, never promoted blindly |
| `batch_score` | Spark job: the interval's rows scored with `@champion`, one Parquet partition per day with a manifest | runs even when a gate said no (the champion still scores); bad data fails without retries |

**Schedule**: nightly cron, or as soon as the drift monitor emits `flywheel://<pipeline>/drift`.
**Manual runs**: set the training window and a note in the trigger form.
Each task is idempotent for its data interval: clearing it gives the same outputs.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param

from mlflywheel_airflow.factory import pipeline_dags
from mlflywheel_airflow.operators import (
    BatchScoreOperator,
    BenchmarkOperator,
    DeployCanaryOperator,
    EvaluateGateOperator,
    ExportQuantizeOperator,
    MaterializeFeaturesOperator,
    RegisterModelOperator,
    TrainModelOperator,
    ValidateDataOperator,
)

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig
    from mlflywheel_airflow.operators.base import PipelineOperator

MLFLOW_CONN_ID = "mlflow_default"
FEAST_CONN_ID = "feast_default"
SPARK_CONN_ID = "spark_default"
MODEL_SERVER_CONN_ID = "model_server_default"

# The training DAG, one row per task, in order: task id (= operator module = stage module),
# operator, the argument that receives the previous task's result (None: it needs none), and
# the task's own arguments. Each task runs after the one above it.
STAGES: list[tuple[str, type[PipelineOperator], str | None, dict[str, Any]]] = [
    ("validate", ValidateDataOperator, None, {"retries": 1}),
    ("feature_materialize", MaterializeFeaturesOperator, None,
     {"window_days": "{{ params.training_window_days }}", "feast_conn_id": FEAST_CONN_ID}),
    ("train", TrainModelOperator, "features", {"note": "{{ params.note }}", "mlflow_conn_id": MLFLOW_CONN_ID}),
    ("evaluate_gate", EvaluateGateOperator, "training", {"mlflow_conn_id": MLFLOW_CONN_ID}),
    ("register", RegisterModelOperator, "verdict", {"mlflow_conn_id": MLFLOW_CONN_ID}),
    ("export_quantize", ExportQuantizeOperator, "registered", {"mlflow_conn_id": MLFLOW_CONN_ID}),
    ("benchmark", BenchmarkOperator, "exported", {"mlflow_conn_id": MLFLOW_CONN_ID}),
    ("deploy_canary", DeployCanaryOperator, "benchmarked",
     {"model_server_conn_id": MODEL_SERVER_CONN_ID, "mlflow_conn_id": MLFLOW_CONN_ID}),
    ("batch_score", BatchScoreOperator, None,
     {"conn_id": SPARK_CONN_ID, "mlflow_conn_id": MLFLOW_CONN_ID, "trigger_rule": "none_failed"}),
]

TASK_DOCS = {
    "validate": "Runs the pipeline's Great Expectations suite on the landing data of the data interval. "
                "A violation fails the task without retries and lists the failed expectations.",
    "feature_materialize": "Feast apply and materialize up to the interval end; writes the point-in-time "
                           "training frame of the window as a snapshot named by its digest.",
    "train": "Trains the configured model with fixed seeds and logs it to MLflow (params, holdout metrics, "
             "dataset digest, git commit, package versions, model with signature).",
    "evaluate_gate": "Scores challenger and `@champion` on the same holdout; thresholds, fairness and output "
                     "checks. Writes the verdict to MLflow first; a rejection skips `register`.",
    "register": "Creates or finds the model version by its run key and sets `@challenger` "
                "(and `@champion` for the first approved model).",
    "export_quantize": "Exports the version to ONNX with preprocessing in the graph (fp32; INT8 where the graph "
                       "has MatMul/Gemm), checks parity on the holdout and adds passing variants to the version "
                       "(onnx flavor, hashes and parity as version tags).",
    "benchmark": "Measures the ONNX variants on each available provider next to the native model, checks the "
                 "SLA on the serving provider and records the variant to serve; chart and table in MLflow.",
    "deploy_canary": "Rolls the approved version out on the model server (connection `model_server_default`, "
                     "`http://127.0.0.1:8000` without one) as `@canary`, step by step from the pipeline's `rollout:` "
                     "section. Each step is judged against `@champion` on the same live traffic and recorded (verdict "
                     "JSON, deployment ledger) before acting: promote at 100 %, roll back on a failed check. Skips "
                     "itself, changing nothing, when the version is already champion or the server cannot be read.",
    "batch_score": "spark-submit of the batch job (connection `spark_default`, `local[*]` without one): joins the "
                   "interval's landing rows to the Feast offline features point-in-time, quarantines invalid rows, "
                   "scores with `@champion` through ONNX Runtime and publishes `predictions/<pipeline>/ds=<day>/` "
                   "atomically with a `_manifest.json`. Runs when a gate skipped the steps before it.",
}


def build_train_dag(config: PipelineConfig) -> DAG:
    """The training DAG of one pipeline."""
    tz = config.schedule.timezone
    start = pendulum.parse(config.schedule.start_date, tz=tz)
    schedule = AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(config.schedule.cron, timezone=tz, interval=dt.timedelta(days=1)),
        assets=[Asset(name=f"{config.name}_drift", uri=config.drift_asset_uri)],
    )
    with DAG(
        dag_id=config.train_dag_id,
        description=(config.description.strip() or f"{config.name} training")[:200],
        doc_md=__doc__ + (f"\n\n## This pipeline: `{config.name}`\n\n{config.description}"
                          if config.description else ""),
        schedule=schedule,
        start_date=start,
        catchup=False,
        max_active_runs=1,
        tags=config.all_tags,
        default_args={"owner": config.owner, "retries": config.retries,
                      "retry_delay": dt.timedelta(minutes=5), "retry_exponential_backoff": True},
        params={
            "training_window_days": Param(config.training.window_days, type="integer",
                                          minimum=config.training.holdout_days + 1, maximum=365,
                                          title="Training window (days)",
                                          description="Days of data before the interval end to train on."),
            "note": Param("", type="string", maxLength=500, title="Note",
                          description="Why this run: recorded on the MLflow run."),
        },
        render_template_as_native_obj=False,
    ) as dag:
        previous = None
        for task_id, operator, upstream_as, arguments in STAGES:
            if upstream_as is not None:
                arguments = {**arguments, upstream_as: previous.output}
            task = operator(task_id=task_id, doc_md=TASK_DOCS[task_id], pipeline=config.name, **arguments)
            if previous is not None:
                previous >> task
            previous = task
    return dag


globals().update(pipeline_dags("train", build_train_dag))
