"""The ``feature_materialize`` task: Feast apply, materialize, and the point-in-time snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mlflywheel_airflow.operators.base import (
    PipelineOperator,
    drift_trigger_extras,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlflywheel_airflow.hooks.feast import FeastHook

class MaterializeFeaturesOperator(PipelineOperator):
    """Compute feature tables, ``feast apply``, materialize the online store up to the interval
    end, and write the training window's point-in-time frame as a snapshot with a digest.

    :param window_days: training window in days; empty means the pipeline's
        ``training.window_days``; a run triggered by the drift asset uses the event's
        ``retrain_window_days`` (``drift.retrain_window_days``) instead (templated)
    :param feast_conn_id: Feast repo connection (default ``feast_default``; absent means the
        project's ``feature_repo/``)

    Returns ``{"run_key", "snapshot": {uri, digest, rows, ...}, "applied_views", ...}``.
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "window_days")
    ui_color = "#d5f5e3"
    reads_landing = "interval"

    def __init__(self, *, window_days: int | str | None = None, feast_conn_id: str = "feast_default",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_days = window_days
        self.feast_conn_id = feast_conn_id

    @cached_property
    def hook(self) -> FeastHook:
        from mlflywheel_airflow.hooks.feast import FeastHook

        return FeastHook(self.feast_conn_id)

    def resolved_window(self) -> int:
        if self.window_days in (None, "", "None"):
            return self.config.training.window_days
        try:
            days = int(self.window_days)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"window_days: expected an integer, found {self.window_days!r}") from exc
        if days <= self.config.training.holdout_days:
            raise ValueError(f"window_days ({days}) must exceed training.holdout_days "
                             f"({self.config.training.holdout_days})")
        return days

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflywheel.services import tracking
        from mlflywheel.stages.feature_materialize import materialize_and_snapshot

        start, end = self.interval()
        window = self.resolved_window()
        drift_events = drift_trigger_extras(context, self.config.drift_asset_uri)
        if drift_events and drift_events[-1].get("retrain_window_days"):
            # A drift-triggered run trains on the recent window the drift monitor asked for.
            window = int(drift_events[-1]["retrain_window_days"])
            self.log.info("drift-triggered (%s): training window %d days", drift_events[-1].get("reason"), window)
        result = self.call_core(materialize_and_snapshot, self.config, self.hook.workspace(),
                                interval_end=end, window_days=window)
        result["snapshot"]["window_days"] = window
        return {"run_key": tracking.run_key(self.config, start, end, window), **result}
