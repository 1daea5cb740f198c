"""MLflow operators: train, evaluate_gate, register.

Each takes the upstream task's small dict (``XComArg``) and passes references only: the
snapshot URI and digest, the run id and model URI, the run key.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import SkipMixin

from mlflywheel_airflow.links import MlflowModelVersionLink, MlflowRunLink
from mlflywheel_airflow.operators._base import (
    PipelineOperator,
    check_if_exists,
    describe_trigger,
    skip_downstream,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlflywheel_airflow.hooks.mlflow import MlflowHook

IF_EXISTS = ("skip", "replace", "fail")


class _MlflowOperator(PipelineOperator):
    def __init__(self, *, mlflow_conn_id: str = "mlflow_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        from mlflywheel_airflow.hooks.mlflow import MlflowHook

        return MlflowHook(self.mlflow_conn_id)


def _require(value: Any, keys: Sequence[str], field: str) -> dict[str, Any]:
    if not isinstance(value, dict) or any(k not in value for k in keys):
        raise ValueError(f"{field}: expected a dict with keys {list(keys)} (the upstream task's result), "
                         f"found {value!r:.200}")
    return value


class TrainModelOperator(_MlflowOperator):
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

        features = _require(self.features, ("run_key", "snapshot"), "features")
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


class EvaluateGateOperator(_MlflowOperator, SkipMixin):
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

        training = _require(self.training, ("run_id", "model_uri", "snapshot"), "training")
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


class RegisterModelOperator(_MlflowOperator):
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

        verdict = _require(self.verdict, ("decision", "run_id", "model_uri", "run_key"), "verdict")
        if verdict["decision"] != "approved":
            raise AirflowFailException(f"the gate decision is {verdict['decision']!r}: nothing to register "
                                       f"(reasons: {verdict.get('reasons')})")
        return self.call_core(register, self.config, self.hook.workspace(), run_id=verdict["run_id"],
                              model_uri=verdict["model_uri"], run_key=verdict["run_key"],
                              if_exists=self.if_exists)
