"""The ``benchmark`` task: ONNX variants against the native model; an SLA miss skips the deploy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import SkipMixin

from mlflywheel_airflow.links import (
    BenchmarkChartLink,
    MlflowRunLink,
)
from mlflywheel_airflow.operators.base import (
    MlflowOperator,
    PipelineOperator,
    check_if_exists,
    require_result,
    skip_downstream,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class BenchmarkOperator(MlflowOperator, SkipMixin):
    """Benchmark the version's ONNX variants against its native model and check the SLA.

    The verdict (all measurements, SLA checks, chosen variant) is written first, to a file,
    the MLflow run (with a table and a PNG chart) and version tags. An SLA miss is a
    decision: this task succeeds and the deploy steps after it are skipped. A pipeline with
    no SLA configured fails without retries.

    :param exported: the ``export_quantize`` result, ``name`` and ``version``; pass
        ``export.output`` (templated)
    :param if_exists: the version was already benchmarked: ``skip`` keeps that verdict,
        ``replace`` measures again
    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "exported")
    operator_extra_links = (BenchmarkChartLink(), MlflowRunLink())
    ui_color = "#fcf3cf"

    def __init__(self, *, exported: Any, if_exists: Literal["skip", "replace"] = "skip", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.exported = exported
        self.if_exists = check_if_exists(if_exists, ("skip", "replace"))

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflywheel.stages.benchmark import benchmark_version

        exported = require_result(self.exported, ("name", "version"), "exported")
        verdict = self.call_core(benchmark_version, self.config, self.hook.workspace(),
                                 version=str(exported["version"]), if_exists=self.if_exists)
        if verdict["decision"] != "approved":
            self.log.warning("benchmark REJECTED %s v%s:\n  - %s", exported["name"], exported["version"],
                             "\n  - ".join(verdict["reasons"]))
            skip_downstream(self, context)
        else:
            self.log.info("benchmark approved %s v%s: serve %s", exported["name"], exported["version"],
                          verdict["serve_variant"])
        return verdict
