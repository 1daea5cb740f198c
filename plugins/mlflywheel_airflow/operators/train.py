"""The ``train`` task: the pipeline's trainer on a feature snapshot, tracked in MLflow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mlflywheel_airflow.links import MlflowRunLink
from mlflywheel_airflow.operators.base import (
    IF_EXISTS,
    MlflowOperator,
    PipelineOperator,
    check_if_exists,
    describe_trigger,
    require_result,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class TrainModelOperator(MlflowOperator):
    """Train the pipeline's model on a feature snapshot; one MLflow run per run key.

    :param features: the ``feature_materialize`` result, ``run_key`` and ``snapshot``;
        pass ``materialize.output`` (templated)
    :param note: free text recorded on the run, from a manual trigger (templated)
    :param if_exists: a finished run with the same run key and dataset digest exists:
        ``skip`` reuses it, ``replace`` trains again, ``fail`` fails
    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "features", "note")
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#fdebd0"

    def __init__(self, *, features: Any, note: str = "", if_exists: Literal["skip", "replace", "fail"] = "skip",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.features = features
        self.note = note
        self.if_exists = check_if_exists(if_exists, IF_EXISTS)

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflywheel.stages.train import train

        features = require_result(self.features, ("run_key", "snapshot"), "features")
        self._run_key = features["run_key"]
        result = self.call_core(train, self.config, self.hook.workspace(), snapshot=features["snapshot"],
                                run_key=features["run_key"], trigger=describe_trigger(context),
                                note=str(self.note or ""), if_exists=self.if_exists)
        # The snapshot reference travels on, so the gate depends on this task alone.
        return {**result, "snapshot": {k: features["snapshot"][k] for k in ("uri", "digest", "rows")}}

    def on_kill(self) -> None:
        """Mark the MLflow run of this training as KILLED instead of leaving it RUNNING."""
        from mlflywheel.services import tracking

        run_key = getattr(self, "_run_key", None)
        if run_key:
            killed = tracking.kill_running(self.hook.workspace(), self.config, run_key)
            self.log.info("marked MLflow runs %s KILLED", killed)
