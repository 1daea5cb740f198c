"""The ``emit_trigger`` task: the retrain asset event, sent only when the drift verdict says ``retrain``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlflywheel_airflow.operators.base import PipelineOperator
from mlflywheel_airflow.operators.drift_check import event_extra

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.notifier import BaseNotifier


class DriftTriggerOperator(PipelineOperator):
    """Emit ``flywheel://<pipeline>/drift`` with the check's findings, or skip when there is nothing to emit.

    The event's extra carries ``reason`` (one line), ``reasons``, ``drifted_features``,
    ``prediction_drift``, ``report_uri``, ``verdict_uri``, ``run_id``, ``check_id``,
    ``retrain_window_days`` and ``champion_version``; the training DAG reads it from its
    triggering asset events. Notifiers (SMTP, Slack, ...) are called once per emitted event;
    without any, the alert is this task's log.

    :param verdict: the ``drift_check`` result; pass ``check.output`` (templated)
    :param notifiers: Airflow notifiers called with the task context when a trigger is emitted
    """

    template_fields: Sequence[str] = (*PipelineOperator.template_fields, "verdict")
    ui_color = "#f5b7b1"

    def __init__(self, *, verdict: Any, notifiers: Sequence[BaseNotifier] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verdict = verdict
        self.notifiers = list(notifiers)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        verdict = self.verdict
        if not isinstance(verdict, dict) or "decision" not in verdict:
            raise ValueError("verdict: expected the drift_check result (a dict with 'decision'), "
                             f"found {verdict!r:.200}")
        if verdict["decision"] != "retrain":
            raise AirflowSkipException(f"decision {verdict['decision']!r}: no retrain trigger "
                                       f"({verdict.get('detail')})")
        extra = event_extra(verdict)
        (asset,) = [a for a in self.outlets if getattr(a, "uri", None) == self.config.drift_asset_uri]
        context["outlet_events"][asset].extra = extra
        self.log.warning("ALERT %s: retrain requested: %s\nreport: %s", self.config.name, extra["reason"],
                         extra.get("report_uri"))
        for notifier in self.notifiers:
            try:
                notifier(context)
            except Exception:  # an unreachable mail server must not swallow the retrain trigger
                self.log.exception("notifier %s failed; the asset event is emitted anyway", type(notifier).__name__)
        return extra
