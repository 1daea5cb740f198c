"""
# `<pipeline>__batch_score`: score past days again, or on a schedule of their own

The training DAG's last task already scores each night's day with `@champion`. This DAG is
the same Spark job on its own, for what the nightly run does not cover: a backfill after
a rollback (`alias` = `previous_champion`), re-scoring a day whose landing data was
corrected, or a pipeline whose `batch.schedule` asks for its own cadence.

**Trigger form**: `day` (YYYY-MM-DD; empty means the day before the run) and `alias`.
**Backfill**: set `batch.schedule` in the pipeline YAML, then `airflow backfill create`.
Each day is one partition `predictions/<pipeline>/ds=<day>/`, replaced atomically: a re-run
of a day gives the same rows and checksum and touches no other day.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable, Param

from mlflywheel_airflow.factory import pipeline_dags
from mlflywheel_airflow.operators import BatchScoreOperator

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig

MLFLOW_CONN_ID = "mlflow_default"
SPARK_CONN_ID = "spark_default"
# A manual run of an unscheduled DAG has a zero-length interval: then the day comes from
# the form, or is the day before the run.
DAY_START = ("{{ params.day or (data_interval_start if data_interval_start and "
             "data_interval_start != data_interval_end else '') }}")
DAY_END = ("{{ macros.ds_add(params.day, 1) if params.day else "
           "(data_interval_end or dag_run.run_after) }}")


def build_batch_dag(config: PipelineConfig) -> DAG:
    """The stand-alone batch-scoring DAG of one pipeline."""
    tz = config.schedule.timezone
    schedule = (CronTriggerTimetable(config.batch.schedule, timezone=tz, interval=dt.timedelta(days=1))
                if config.batch.schedule else None)
    with DAG(
        dag_id=config.batch_dag_id,
        description=f"{config.name}: batch scoring with a registry alias on Spark",
        doc_md=__doc__,
        schedule=schedule,
        start_date=pendulum.parse(config.schedule.start_date, tz=tz),
        catchup=False,
        max_active_runs=1,
        tags=sorted({"mlflywheel", "batch", *config.tags}),
        default_args={"owner": config.owner, "retries": config.retries,
                      "retry_delay": dt.timedelta(minutes=5), "retry_exponential_backoff": True},
        params={
            "day": Param("", type="string", pattern=r"^(\d{4}-\d{2}-\d{2})?$", title="Day",
                         description="The landing day to score (YYYY-MM-DD); empty: the day before the run."),
            "alias": Param(config.batch.alias, type="string", pattern=r"^[a-z][a-z0-9_-]{0,63}$",
                           title="Model alias", description="Registry alias to score with."),
        },
    ) as dag:
        BatchScoreOperator(
            task_id="batch_score", pipeline=config.name, alias="{{ params.alias }}",
            interval_start=DAY_START, interval_end=DAY_END, conn_id=SPARK_CONN_ID, mlflow_conn_id=MLFLOW_CONN_ID,
            doc_md="spark-submit of the batch job for the chosen day: point-in-time features, quarantine, ONNX "
                   "scores with the alias, one partition published atomically with a `_manifest.json`.")
    return dag


globals().update(pipeline_dags("batch", build_batch_dag))
