"""Operators: one module per integration, each a thin wrapper over one core call."""

from mlflywheel_airflow.operators.drift import DriftCheckOperator, DriftTriggerOperator
from mlflywheel_airflow.operators.feast import MaterializeFeaturesOperator
from mlflywheel_airflow.operators.mlflow import (
    EvaluateGateOperator,
    RegisterModelOperator,
    TrainModelOperator,
)
from mlflywheel_airflow.operators.onnx import (
    BenchmarkOperator,
    ExportQuantizeOperator,
    OnnxInferenceOperator,
)
from mlflywheel_airflow.operators.rollout import DeployCanaryOperator, RollbackOperator
from mlflywheel_airflow.operators.spark import BatchScoreOperator
from mlflywheel_airflow.operators.validation import ValidateDataOperator

__all__ = [
    "BatchScoreOperator", "BenchmarkOperator", "DeployCanaryOperator", "DriftCheckOperator", "DriftTriggerOperator",
    "EvaluateGateOperator", "ExportQuantizeOperator", "MaterializeFeaturesOperator", "OnnxInferenceOperator",
    "RegisterModelOperator", "RollbackOperator", "TrainModelOperator", "ValidateDataOperator",
]
