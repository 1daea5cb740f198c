"""The ``evaluate_gate`` task: thresholds, fairness, output checks and the champion; a rejection skips what follows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import SkipMixin

from mlflywheel_airflow.links import MlflowRunLink
from mlflywheel_airflow.operators.base import (
    MlflowOperator,
    PipelineOperator,
    require_result,
    skip_downstream,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class EvaluateGateOperator(MlflowOperator, SkipMixin):
    """Judge the challenger against thresholds, fairness limits and the ``@champion``.

    The verdict JSON is logged to the challenger's run before the decision. A rejection is
    a decision, not a failure: this task succeeds, returns the verdict with its reasons,
    and every downstream task is skipped. A gate that cannot judge (no thresholds, a
    sensitive attribute missing) fails without retries.

    :param training: the ``train`` result, ``run_id``, ``model_uri`` and ``snapshot``;
        pass ``train.output`` (templated)
    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "training")
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#fadbd8"

    def __init__(self, *, training: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.training = training

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflywheel.stages.evaluate_gate import REJECTED, evaluate_gate

        training = require_result(self.training, ("run_id", "model_uri", "snapshot"), "training")
        verdict = self.call_core(evaluate_gate, self.config, self.hook.workspace(), run_id=training["run_id"],
                                 model_uri=training["model_uri"], snapshot=training["snapshot"])
        verdict = {**verdict, "run_id": training["run_id"], "experiment_id": training.get("experiment_id"),
                   "model_uri": training["model_uri"], "run_key": training.get("run_key")}
        if verdict["decision"] == REJECTED:
            self.log.warning("gate REJECTED the challenger (run %s):\n  - %s\nverdict: %s", training["run_id"],
                             "\n  - ".join(verdict["reasons"]), verdict["verdict_path"])
            skip_downstream(self, context)
        else:
            self.log.info("gate APPROVED the challenger (run %s): %d/%d checks passed", training["run_id"],
                          verdict["checks_passed"], verdict["checks_total"])
        return verdict
