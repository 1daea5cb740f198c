"""The ``rollback`` task: ``@champion`` back to ``@previous_champion`` (or a named version)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlflywheel_airflow.operators.base import (
    MlflowOperator,
    PipelineOperator,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class RollbackOperator(MlflowOperator):
    """Put ``@champion`` back on ``@previous_champion`` (or ``to_version``) in one step.

    The manual path of the UI (``<pipeline>__rollback``), the same core call as
    ``flywheel rollback``: the target must exist and carry a published ONNX variant, or nothing
    moves and the task fails without retries. The change is recorded in the deployment ledger.

    :param to_version: the version to restore; empty means ``@previous_champion`` (templated)
    :param reason: why, recorded in the ledger (templated)
    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "to_version", "reason")
    ui_color = "#f5b7b1"

    def __init__(self, *, reason: str, to_version: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason
        self.to_version = to_version

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflywheel.stages.rollback import rollback

        ws = self.hook.workspace()
        target = str(self.to_version).strip() if self.to_version not in (None, "", "None") else None
        event = self.call_core(rollback, self.config, ws, reason=str(self.reason), to_version=target)
        self.log.info("rolled back %s: @champion is v%s (%s)", self.config.model_name, event.get("champion"),
                      self.reason)
        return event
