"""OnnxInferenceOperator: score a Parquet file with ``<model>@<alias>`` (for DAGs of your own)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlflywheel_airflow.operators.base import (
    MlflowOperator,
    PipelineOperator,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class OnnxInferenceOperator(MlflowOperator):
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
