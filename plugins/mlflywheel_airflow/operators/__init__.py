"""Operators: one module per task id, each a thin wrapper over its stage in ``mlflywheel.stages``.

``from mlflywheel_airflow.operators import <Class>`` is the documented import path.
"""

from mlflywheel_airflow.operators.batch_score import BatchScoreOperator
from mlflywheel_airflow.operators.benchmark import BenchmarkOperator
from mlflywheel_airflow.operators.deploy_canary import DeployCanaryOperator
from mlflywheel_airflow.operators.drift_check import DriftCheckOperator
from mlflywheel_airflow.operators.emit_trigger import DriftTriggerOperator
from mlflywheel_airflow.operators.evaluate_gate import EvaluateGateOperator
from mlflywheel_airflow.operators.export_quantize import ExportQuantizeOperator
from mlflywheel_airflow.operators.feature_materialize import MaterializeFeaturesOperator
from mlflywheel_airflow.operators.infer import OnnxInferenceOperator
from mlflywheel_airflow.operators.register import RegisterModelOperator
from mlflywheel_airflow.operators.rollback import RollbackOperator
from mlflywheel_airflow.operators.train import TrainModelOperator
from mlflywheel_airflow.operators.validate import ValidateDataOperator

__all__ = [
    "BatchScoreOperator", "BenchmarkOperator", "DeployCanaryOperator", "DriftCheckOperator", "DriftTriggerOperator",
    "EvaluateGateOperator", "ExportQuantizeOperator", "MaterializeFeaturesOperator", "OnnxInferenceOperator",
    "RegisterModelOperator", "RollbackOperator", "TrainModelOperator", "ValidateDataOperator",
]
