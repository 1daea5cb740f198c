"""The Airflow plugin: registers mlflywheel's operator extra links with the webserver."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlflywheel_airflow.links import (
    BenchmarkChartLink,
    DriftReportLink,
    MlflowModelVersionLink,
    MlflowRunLink,
    ValidationResultLink,
)


class FlywheelPlugin(AirflowPlugin):
    name = "mlflywheel"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink(), DriftReportLink(), ValidationResultLink(),
                            BenchmarkChartLink()]
