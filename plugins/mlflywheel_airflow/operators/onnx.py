"""ONNX operators: export_quantize and benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import SkipMixin

from mlflywheel_airflow.links import BenchmarkChartLink, MlflowRunLink
from mlflywheel_airflow.operators._base import PipelineOperator, check_if_exists, skip_downstream
from mlflywheel_airflow.operators.mlflow import _MlflowOperator, _require

if TYPE_CHECKING:
    from airflow.sdk import Context


class ExportQuantizeOperator(_MlflowOperator):
    """Export the registered version to ONNX (fp32, and INT8 where the graph has MatMul/Gemm),
    check parity on the holdout, and publish passing variants on the version itself.

    fp32 breaking parity fails the task without retries, with the numbers; an INT8 variant
    breaking it is left out and the reason recorded on the version.

    :param registered: the ``register`` result, ``name`` and ``version``; pass
        ``register.output`` (templated)
    :param if_exists: the version already carries ONNX variants: ``skip`` keeps them,
        ``replace`` exports again
    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "registered")
    ui_color = "#d1f2eb"

    def __init__(self, *, registered: Any, if_exists: Literal["skip", "replace"] = "skip", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registered = registered
        self.if_exists = check_if_exists(if_exists, ("skip", "replace"))

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflywheel.stages.export_quantize import export_version

        registered = _require(self.registered, ("name", "version"), "registered")
        return self.call_core(export_version, self.config, self.hook.workspace(), version=str(registered["version"]),
                              if_exists=self.if_exists)


class BenchmarkOperator(_MlflowOperator, SkipMixin):
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

        exported = _require(self.exported, ("name", "version"), "exported")
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


class OnnxInferenceOperator(_MlflowOperator):
    """Score a Parquet dataset with ``<model>@<alias>`` through ``OnnxModel``: CUDA with IO
    binding where a GPU is present, the CPU with a warning where not (never a failure).

    :param input_path: Parquet file to score (templated)
    :param output_path: where predictions go, written atomically (templated)
    :param alias: registry alias to score with (templated)
    :param batch_size: rows per ONNX call
    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "input_path", "output_path", "alias")
    ui_color = "#ebdef0"

    def __init__(self, *, input_path: str, output_path: str, alias: str = "champion", batch_size: int = 65536,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_path = input_path
        self.output_path = output_path
        self.alias = alias
        self.batch_size = batch_size

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflywheel.services.infer import score_parquet

        return self.call_core(score_parquet, self.config, self.hook.workspace(), alias=self.alias,
                              input_path=self.input_path, output_path=self.output_path, batch_size=self.batch_size)
