"""The ``validate`` task: the Great Expectations gate on the interval's landing data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflywheel_airflow.links import ValidationResultLink
from mlflywheel_airflow.operators.base import MlflowOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class ValidateDataOperator(MlflowOperator):
    """Run the pipeline's expectation suite on the landing partitions of the data interval.

    A violation fails the task without retries; the message lists each failed expectation
    (column, expected, observed) and the path of the full result, which is also pushed to
    XCom under ``validation_result`` before failing. Pass or fail, the result is also an MLflow
    run in ``flywheel/<pipeline>/validation`` (the task's "Validation result" link). A missing
    partition is retried (late data). See :class:`PipelineOperator` for the templated parameters.

    :param mlflow_conn_id: MLflow connection for the validation run (absent means the
        workspace's tracking URI)
    """

    operator_extra_links = (ValidationResultLink(),)
    ui_color = "#d6eaf8"
    reads_landing = "interval"

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from mlflywheel.services.errors import DataValidationError
        from mlflywheel.stages.validate import validate_landing

        start, end = self.interval()
        try:
            return self.call_core(validate_landing, self.config, self.hook.workspace(), start=start, end=end)
        except AirflowFailException as exc:
            cause = exc.__cause__
            if isinstance(cause, DataValidationError):
                context["ti"].xcom_push(key="validation_result", value={
                    "result_path": cause.result_path, "failures": cause.failures[:50], **cause.run})
            raise
