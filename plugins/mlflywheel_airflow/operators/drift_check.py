"""Drift operators: ``drift_check`` judges, ``emit_trigger`` sends the retrain asset event.

The split keeps the contract honest: Airflow emits an asset event for every outlet of a
task that succeeds, so the task that declares ``flywheel://<pipeline>/drift`` as its outlet
runs only to emit it and is skipped when the verdict says anything but ``retrain``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mlflywheel_airflow.links import (
    DriftReportLink,
    MlflowRunLink,
)
from mlflywheel_airflow.operators.base import (
    PipelineOperator,
    parse_time,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlflywheel.services.settings import Workspace
    from mlflywheel_airflow.hooks.mlflow import MlflowHook

#: keys of the check result copied into the asset event's extra
EVENT_KEYS = ("pipeline", "check_id", "as_of", "reasons", "drifted_features", "drifted_share", "prediction_drift",
              "report_uri", "verdict_uri", "verdict_path", "run_id", "retrain_window_days")


class DriftCheckOperator(PipelineOperator):
    """Compare the newest data with the ``@champion``'s training snapshot; write the verdict.

    One core call (``mlflywheel.stages.drift_check.check.run_drift_check``): statistics per input, score
    and live-metric drift, the Evidently report, history and chart, an MLflow run in
    ``flywheel/<pipeline>/drift``, and the decision (``retrain``, ``no_drift``,
    ``suppressed`` or ``skipped``) with its reasons. The check time is the interval end.

    :param window_days: current window in days; empty means ``drift.window_days`` (templated)
    :param reference: ``champion`` (its training snapshot) or a snapshot digest (templated)
    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    :param feast_conn_id: Feast repo connection (absent means the project's ``feature_repo/``)

    Returns the check summary: ``decision``, ``reasons``, ``detail``, ``drifted_features``
    (column -> statistic, score, psi, reasons), ``drifted_share``, ``prediction_drift``,
    ``live``, ``evidently``, ``reference``, ``window``, ``verdict_path``, ``verdict_uri``,
    ``report_uri``, ``run_id``, ``experiment_id``, ``retrain_window_days``, ``check_id``.
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "window_days", "reference")
    operator_extra_links = (DriftReportLink(), MlflowRunLink())
    ui_color = "#fcf3cf"
    reads_landing = "history"

    def __init__(self, *, window_days: int | str | None = None, reference: str = "champion",
                 mlflow_conn_id: str = "mlflow_default", feast_conn_id: str = "feast_default",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_days = window_days
        self.reference = reference
        self.mlflow_conn_id = mlflow_conn_id
        self.feast_conn_id = feast_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        from mlflywheel_airflow.hooks.mlflow import MlflowHook

        return MlflowHook(self.mlflow_conn_id)

    def workspace(self) -> Workspace:
        """The MLflow connection's workspace with the Feast connection's repo."""
        from mlflywheel_airflow.hooks.feast import FeastHook

        repo = FeastHook(self.feast_conn_id).workspace().feature_repo_path
        ws = self.hook.workspace()
        return dataclasses.replace(ws, feature_repo_path=repo) if repo else ws

    def resolved_window(self) -> int | None:
        if self.window_days in (None, "", "None"):
            return None
        try:
            days = int(self.window_days)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"window_days: expected an integer, found {self.window_days!r}") from exc
        if days < 1:
            raise ValueError(f"window_days must be at least 1, found {days}")
        return days

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflywheel.stages.drift_check.check import run_drift_check
        
        # A cron-triggered check has a point, not an interval: the check time is its end.
        as_of = parse_time(self.interval_end, "interval_end")
        result = self.call_core(run_drift_check, self.config, self.workspace(), as_of=as_of,
                                window=self.resolved_window(), reference=str(self.reference or "champion"))
        log = self.log.warning if result["decision"] in ("retrain", "suppressed") else self.log.info
        log("drift check %s: %s (%s)%s\nverdict: %s", result["check_id"], result["decision"].upper(), result["detail"],
            "".join(f"\n  - {r}" for r in result["reasons"]), result["verdict_path"])
        return result


def event_extra(verdict: dict[str, Any]) -> dict[str, Any]:
    """The asset event's extra: small, JSON-safe, enough for the training run and a human."""
    extra = {k: verdict.get(k) for k in EVENT_KEYS}
    extra["reason"] = "; ".join(verdict.get("reasons") or [])[:1000]
    extra["champion_version"] = (verdict.get("reference") or {}).get("version")
    live = verdict.get("live") or {}
    if live.get("metrics"):
        extra["live_metrics"] = {k: live["metrics"][k] for k in ("roc_auc", "pr_auc", "calibration_error")
                                 if k in live["metrics"]}
    return extra
