"""The ``batch_score`` task: spark-submit of the batch job, the interval's rows scored with ``@champion``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from mlflywheel_airflow.operators.base import (
    INTERVAL_END,
    INTERVAL_START,
    PipelineOperator,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlflywheel_airflow.hooks.mlflow import MlflowHook

class BatchScoreOperator(PipelineOperator, SparkSubmitOperator):
    """Score the data interval's rows with ``<model>@<alias>`` on Spark and publish them.

    Submits ``mlflywheel/stages/batch_score/job.py`` with spark-submit through the connection
    ``conn_id`` (type ``spark``: host ``local[*]``, or ``spark://host:7077`` for a standalone
    cluster, ``yarn``, ``k8s://...``; no connection at all means ``local[*]``),
    with the pipeline's Spark settings (``batch.spark_conf`` and ``conf`` win). Each day of
    the interval becomes ``<predictions>/<pipeline>/ds=YYYY-MM-DD/`` with a
    ``_manifest.json``, published atomically; a re-run replaces that partition only. Bad
    data, a missing alias or a model whose inputs do not match fail without retries, and
    nothing is published.

    :param alias: registry alias to score with (default: the pipeline's ``batch.alias``)
        (templated)
    :param output_root: where the partitions go (default: ``$FLYWHEEL_HOME/predictions/<pipeline>``)
        (templated)
    :param conn_id: Spark connection
    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, *SparkSubmitOperator.template_fields,
                                      "alias", "output_root")
    ui_color = "#fdebd0"
    reads_landing = "interval"

    def __init__(self, *, alias: str | None = None, output_root: str | None = None, conn_id: str = "spark_default",
                 mlflow_conn_id: str = "mlflow_default", interval_start: str = INTERVAL_START,
                 interval_end: str = INTERVAL_END, **kwargs: Any) -> None:
        kwargs.setdefault("name", f"flywheel-batch-{kwargs.get('pipeline', '')}")
        super().__init__(application="", conn_id=conn_id, interval_start=interval_start, interval_end=interval_end,
                         **kwargs)
        self.alias = alias
        self.output_root = output_root
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def mlflow_hook(self) -> MlflowHook:
        from mlflywheel_airflow.hooks.mlflow import MlflowHook

        return MlflowHook(self.mlflow_conn_id)

    def _default_to_local(self) -> None:
        """No connection ``conn_id``: define it as ``local[*]`` for this task's process.

        The provider's hook falls back to ``yarn`` without a connection, which fails on a
        laptop; the embedded default of this project is local mode. An environment-variable
        connection is Airflow's own mechanism and only lives as long as this task process.
        """
        import json
        import os

        from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

        try:
            BaseHook.get_connection(self._conn_id)
        except AirflowNotFoundException:
            self.log.info("no connection %r: running Spark in local[*] mode", self._conn_id)
            os.environ[f"AIRFLOW_CONN_{self._conn_id.upper()}"] = json.dumps({"conn_type": "spark",
                                                                              "host": "local[*]"})

    # SparkSubmitOperator.execute returns None; this one returns the job's result for XCom
    def execute(self, context: Context) -> dict[str, Any]:  # type: ignore[override]
        import json
        import os
        import sys

        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        from mlflywheel.stages.batch_score import job
        from mlflywheel.stages.batch_score.session import spark_conf
        from mlflywheel_airflow.hooks.storage import upload_predictions

        start, end = self.interval()
        ws = self.mlflow_hook.workspace()
        ti = context["ti"]
        submission = re.sub(r"[^A-Za-z0-9_.-]+", "_",
                            f"{ti.dag_id}.{ti.run_id}.{ti.task_id}.{ti.try_number}")[:200]
        self.application = job.__file__
        self.application_args = ["--pipeline", self.config.name, "--start", start.isoformat(), "--end",
                                 end.isoformat(), "--submission", submission,
                                 *(["--alias", str(self.alias)] if self.alias else []),
                                 *(["--output-root", str(self.output_root)] if self.output_root else [])]
        self.conf = {**spark_conf(self.config), **(self.conf or {})}
        venv_bin = str(Path(sys.executable).parent)
        self.env_vars = {
            "FLYWHEEL_HOME": str(ws.home), "MLFLOW_TRACKING_URI": ws.tracking_uri,
            "MLFLOW_REGISTRY_URI": ws.registry_uri, "PYSPARK_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            **(self.env_vars or {}),
        }
        self._default_to_local()
        status_file = job.status_path(ws, self.config.name, submission)
        try:
            super().execute(context)
        except AirflowException as exc:
            status = json.loads(status_file.read_text()) if status_file.is_file() else {}
            if status.get("deterministic"):
                raise AirflowFailException(f"{status['error']}: {status['message']}") from exc
            raise
        if not status_file.is_file():
            raise AirflowException(f"spark-submit succeeded but the job left no status at {status_file}")
        result: dict[str, Any] = json.loads(status_file.read_text())
        result["uploaded"] = self.call_core(upload_predictions, self.config, ws, result)
        self.log.info("batch_score %s: %s rows scored, %s quarantined, %s v%s -> %s", self.config.name,
                      result["rows"], result["quarantined_rows"], result["model_name"], result["model_version"],
                      result["output_root"])
        return result
