"""The ``export_quantize`` task: ONNX fp32 and INT8, parity-checked, published on the version."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mlflywheel_airflow.operators.base import (
    MlflowOperator,
    PipelineOperator,
    check_if_exists,
    require_result,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class ExportQuantizeOperator(MlflowOperator):
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

        registered = require_result(self.registered, ("name", "version"), "registered")
        return self.call_core(export_version, self.config, self.hook.workspace(), version=str(registered["version"]),
                              if_exists=self.if_exists)
