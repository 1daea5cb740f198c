"""The ``deploy_canary`` task: the approved version reaches live traffic step by step, judged at each step."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel_airflow.operators.base import (
    MlflowOperator,
    PipelineOperator,
    require_result,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlflywheel_airflow.hooks.model_server import ModelServerHook

class DeployCanaryOperator(MlflowOperator):
    """Roll the benchmarked version out on the model server as ``@canary``, then promote or roll back.

    Starts the canary at the first step of the pipeline's ``rollout:`` plan, then defers to a
    :class:`~mlflywheel_airflow.triggers.deploy_canary.BakeTrigger` for one analysis interval at a
    time (no worker slot held); each resume scrapes the server's ``/metrics`` and the prediction
    log, records the verdict and acts. Outcomes:

    - **promote**: ``@champion`` moved, the old one kept as ``@previous_champion``; the task
      succeeds with the final state.
    - **rollback**: a decision, like a gate rejection: canary weight 0 and ``@canary`` removed,
      the verdict and ledger say why; the task succeeds with ``decision: rollback`` (the
      champion still serves and ``batch_score`` still runs).
    - **skipped** (the task skips itself, nothing changed in the registry): the version is
      already ``@champion`` (a first model), there is no champion to compare with, or the
      server cannot be read before the start. Never a blind promotion.

    An error while judging a step rolls the canary back before the task fails.

    :param benchmarked: the ``benchmark`` result, ``name``, ``version`` and ``decision``; pass
        ``benchmark.output`` (templated)
    :param model_server_conn_id: the model server (``http://127.0.0.1:8000`` without it)
    :param prediction_log: the server's prediction log (default: the pipeline's
        ``serving.log_path`` or the embedded one under ``FLYWHEEL_HOME``) (templated)
    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "benchmarked", "prediction_log")
    ui_color = "#d6eaf8"

    def __init__(self, *, benchmarked: Any, model_server_conn_id: str = "model_server_default",
                 prediction_log: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.benchmarked = benchmarked
        self.model_server_conn_id = model_server_conn_id
        self.prediction_log = prediction_log
        self._rollout: dict[str, Any] | None = None

    @cached_property
    def server_hook(self) -> ModelServerHook:
        from mlflywheel_airflow.hooks.model_server import ModelServerHook

        return ModelServerHook(self.model_server_conn_id)

    def _log_path(self) -> str:
        from mlflywheel.services.predlog import log_path

        spec = self.config.serving.log_path
        return str(self.prediction_log or (Path(spec) if spec else log_path(self.hook.workspace(), self.config.name)))

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlflywheel.stages.deploy_canary.controller import start

        benchmarked = require_result(self.benchmarked, ("name", "version", "decision"), "benchmarked")
        if benchmarked["decision"] != "approved":
            raise AirflowSkipException(f"{benchmarked['name']} v{benchmarked['version']}: benchmark "
                                       f"{benchmarked['decision']}, nothing to deploy")
        ws = self.hook.workspace()
        state = self.call_core(start, ws, self.config, self.hook.get_conn(), version=str(benchmarked["version"]),
                               metrics_url=self.server_hook.base_url(), log=self._log_path())
        return self._next(state)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from mlflywheel.stages.deploy_canary.controller import run_step

        if not event or event.get("status") != "success" or "state" not in event:
            self._abort((event or {}).get("state"), f"bake trigger ended without success: {event!r:.300}")
            raise AirflowFailException(f"bake trigger ended without success: {event!r:.300}; canary rolled back")
        self._rollout = event["state"]
        try:
            state = self.call_core(run_step, self.hook.workspace(), self.config, self.hook.get_conn(), self._rollout)
        except Exception as exc:
            self._abort(self._rollout, f"analysis failed: {type(exc).__name__}: {exc}")
            raise
        return self._next(state)

    def _next(self, state: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlflywheel_airflow.triggers.deploy_canary import BakeTrigger

        self._rollout = state
        decision, version = state["decision"], state["version"]
        if decision == "skipped":
            raise AirflowSkipException(f"deploy_canary skipped v{version}: {'; '.join(state['reasons'])}")
        if decision == "rollback":
            self.log.warning("canary v%s ROLLED BACK (champion v%s unchanged):\n  - %s\nverdict: %s", version,
                             state["champion"], "\n  - ".join(state["reasons"]), state["verdict_path"])
            return state
        if decision == "promote":
            self.log.info("canary v%s PROMOTED to champion (previous v%s); verdict: %s", version,
                          state["champion"], state["verdict_path"])
            return state
        self.log.info("canary v%s: %s at step %s (%s %s%%)%s", version, decision, state["step_index"],
                      state["mode"], state["weight"], f": {'; '.join(state['reasons'])}" if state["reasons"] else "")
        wait_s = self.config.rollout.analysis_interval_s
        self.defer(trigger=BakeTrigger(state=state, wait_s=wait_s,
                                       ready_url=f"{state['metrics_url'].rstrip('/')}/v2/health/ready"),
                   method_name="execute_complete", timeout=bake_timeout(wait_s))
        raise AssertionError("defer() returns only by raising")  # pragma: no cover

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A wait that never came back (no triggerer running, or the trigger crashed) fails the
        task: first the canary is taken off, so it never keeps serving unjudged."""
        from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR

        if next_method == TRIGGER_FAIL_REPR:
            benchmarked = self.benchmarked if isinstance(self.benchmarked, dict) else {}
            error = (next_kwargs or {}).get("error", "unknown")
            self._abort({"version": benchmarked.get("version")},
                        f"bake wait ended without an analysis ({error}): is a triggerer running?")
        return super().resume_execution(next_method, next_kwargs, context)

    def _abort(self, state: dict[str, Any] | None, reason: str) -> None:
        from mlflywheel.stages.deploy_canary.controller import abort

        if state and state.get("version"):
            abort(self.hook.workspace(), self.config, self.hook.get_conn(), state["version"], reason)

    def on_kill(self) -> None:
        """The task was killed mid-analysis: take the canary off; the champion is never touched."""
        self._abort(self._rollout, "deploy_canary killed")


def bake_timeout(wait_s: float) -> dt.timedelta:
    """How long one deferred wait may take before the task fails: the wait plus ten minutes
    (a triggerer restart), never less than three waits."""
    return dt.timedelta(seconds=max(3 * wait_s, wait_s + 600))
