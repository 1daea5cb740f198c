"""
# `<pipeline>__rollback`: put the previous champion back, from the UI

One task, the same step as `flywheel rollback <pipeline>`: `@champion` moves back to
`@previous_champion` (or to the version typed in the form), the model server follows within
one registry poll, and the deployment ledger (`reports/<pipeline>/deployments.jsonl`) records
who asked and why. A target that does not exist or has no published ONNX variant moves
nothing and fails the run.

**Trigger form**: `to_version` (empty: the previous champion) and `reason` (required).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pendulum
from airflow.sdk import DAG, Param

from mlflywheel_airflow.factory import pipeline_dags
from mlflywheel_airflow.operators import RollbackOperator

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig

MLFLOW_CONN_ID = "mlflow_default"


def build_rollback_dag(config: PipelineConfig) -> DAG:
    """The manual rollback DAG of one pipeline."""
    with DAG(
        dag_id=config.rollback_dag_id,
        description=f"{config.name}: restore the previous champion",
        doc_md=__doc__,
        schedule=None,
        start_date=pendulum.parse(config.schedule.start_date, tz=config.schedule.timezone),
        catchup=False,
        max_active_runs=1,
        tags=sorted({"mlflywheel", "serving", *config.tags}),
        default_args={"owner": config.owner, "retries": 0},
        params={
            "to_version": Param("", type="string", pattern=r"^(\d+)?$", title="Version to restore",
                                description="Empty: @previous_champion."),
            "reason": Param(type="string", minLength=3, maxLength=500, title="Reason",
                            description="Recorded in the deployment ledger."),
        },
    ) as dag:
        RollbackOperator(task_id="rollback", pipeline=config.name, to_version="{{ params.to_version }}",
                         reason="{{ params.reason }}", mlflow_conn_id=MLFLOW_CONN_ID,
                         doc_md="Moves `@champion` back (the same call as `flywheel rollback`), recorded in the "
                                "deployment ledger.")
    return dag


globals().update(pipeline_dags("rollback", build_rollback_dag))
