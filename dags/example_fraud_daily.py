"""
# `example_fraud_daily`: a DAG of your own, built from mlflywheel's operators

An example for data engineers (see `docs/writing-dags.md`): each morning, check yesterday's
fraud transactions with the pipeline's expectation suite, then, side by side, score them with
`fraud_detector@champion` on Spark and compare them with the champion's training data.

| task | operator | what it does |
|---|---|---|
| `validate` | `ValidateDataOperator` | the `fraud_transactions` suite on the day's landing partition; bad data fails at once, a late partition is retried |
| `score` | `BatchScoreOperator` | `predictions/fraud/ds=<day>/` with a `_manifest.json`, published atomically |
| `drift_check` | `DriftCheckOperator` | the drift verdict and Evidently report (link: *Drift report*); it decides, it triggers nothing |

Every operator takes `pipeline=` (the YAML in `include/pipelines/`) and reads its data
interval from the run, so this file holds no paths, no credentials and no model logic.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable

from mlflywheel_airflow.operators import (
    BatchScoreOperator,
    DriftCheckOperator,
    ValidateDataOperator,
)

with DAG(
    dag_id="example_fraud_daily",
    description="Example: validate, score and drift-check yesterday's fraud transactions",
    doc_md=__doc__,
    # each run covers the day before it: data interval [06:00 yesterday, 06:00 today)
    schedule=CronTriggerTimetable("0 6 * * *", timezone="UTC", interval=dt.timedelta(days=1)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlflywheel", "example", "fraud"],
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": dt.timedelta(minutes=10)},
) as dag:
    validate = ValidateDataOperator(
        task_id="validate", pipeline="fraud", retries=1,
        doc_md="Great Expectations on the day's landing partition (link: *Validation result*).")
    score = BatchScoreOperator(
        task_id="score", pipeline="fraud", alias="champion",
        doc_md="Spark batch scoring with `fraud_detector@champion` through ONNX Runtime.")
    drift = DriftCheckOperator(
        task_id="drift_check", pipeline="fraud",
        doc_md="Feature and prediction drift against the champion's training snapshot.")

    validate >> [score, drift]
