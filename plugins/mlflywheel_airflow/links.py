"""Operator extra links: from a task in the Airflow UI to its MLflow run or model version.

Airflow 3 computes a link in the worker when the task ends (from the task's XCom) and
stores it; the UI shows the stored URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def _result(ti_key: TaskInstanceKey, key: str = "return_value") -> dict[str, Any]:
    from airflow.sdk.execution_time.xcom import XCom

    value = XCom.get_value(key=key, ti_key=ti_key)
    return value if isinstance(value, dict) else {}


def _ui_url(operator: BaseOperator) -> str:
    from mlflywheel_airflow.hooks.mlflow import MlflowHook

    return MlflowHook(getattr(operator, "mlflow_conn_id", None)).ui_url()


class MlflowLink(BaseOperatorLink):
    """A page of the MLflow UI named by keys of the task's returned dict."""

    #: path under the UI root, formatted with the task's result
    path: str = ""
    keys: tuple[str, ...] = ()
    #: XCom keys read in turn: the first that holds every key wins (a failed task has no return value)
    xcom_keys: tuple[str, ...] = ("return_value",)

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        result = next((r for r in map(lambda k: _result(ti_key, k), self.xcom_keys)
                       if all(r.get(key) for key in self.keys)), None)
        if result is None:
            return ""
        return f"{_ui_url(operator)}/{self.path.format(**{k: quote(str(result[k])) for k in self.keys})}"


class MlflowRunLink(MlflowLink):
    """The MLflow run this task trained or judged."""

    name = "MLflow run"
    path = "#/experiments/{experiment_id}/runs/{run_id}"
    keys = ("experiment_id", "run_id")


class MlflowModelVersionLink(MlflowLink):
    """The registered model version this task created or found."""

    name = "MLflow model version"
    path = "#/models/{name}/versions/{version}"
    keys = ("name", "version")


class DriftReportLink(MlflowLink):
    """The Evidently drift report of this check, in its MLflow run's artifacts."""

    name = "Drift report"
    path = "#/experiments/{experiment_id}/runs/{run_id}/artifactPath/drift/report.html"
    keys = ("experiment_id", "run_id", "report_uri")


class ValidationResultLink(MlflowLink):
    """The Great Expectations result of this validation (pass or fail), rendered in MLflow."""

    name = "Validation result"
    path = "#/experiments/{experiment_id}/runs/{run_id}/artifactPath/validation/report.html"
    keys = ("experiment_id", "run_id")
    xcom_keys = ("return_value", "validation_result")


class BenchmarkChartLink(MlflowLink):
    """The benchmark's latency and throughput chart, on the version's MLflow run."""

    name = "Benchmark chart"
    path = "#/experiments/{experiment_id}/runs/{run_id}/artifactPath/benchmark/latency.png"
    keys = ("experiment_id", "run_id")
