"""The ``register`` task: the approved challenger becomes a model version (``@challenger``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mlflywheel_airflow.links import MlflowModelVersionLink
from mlflywheel_airflow.operators.base import (
    MlflowOperator,
    PipelineOperator,
    check_if_exists,
    require_result,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class RegisterModelOperator(MlflowOperator):
    """Register the approved challenger (found again by its run key), alias ``challenger``;
    the first approved model of a pipeline also becomes ``champion``.

    :param verdict: the ``evaluate_gate`` result, ``decision``, ``run_id``, ``model_uri``
        and ``run_key``; pass ``gate.output``; only ``approved`` is registered (templated)
    :param if_exists: a version exists for the run key: ``skip`` reuses it, ``fail`` fails
    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "verdict")
    operator_extra_links = (MlflowModelVersionLink(),)
    ui_color = "#e8daef"

    def __init__(self, *, verdict: Any, if_exists: Literal["skip", "fail"] = "skip", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verdict = verdict
        self.if_exists = check_if_exists(if_exists, ("skip", "fail"))

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from mlflywheel.stages.register import register

        verdict = require_result(self.verdict, ("decision", "run_id", "model_uri", "run_key"), "verdict")
        if verdict["decision"] != "approved":
            raise AirflowFailException(f"the gate decision is {verdict['decision']!r}: nothing to register "
                                       f"(reasons: {verdict.get('reasons')})")
        return self.call_core(register, self.config, self.hook.workspace(), run_id=verdict["run_id"],
                              model_uri=verdict["model_uri"], run_key=verdict["run_key"],
                              if_exists=self.if_exists)
