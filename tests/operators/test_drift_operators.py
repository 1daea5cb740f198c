"""Drift operators and the drift-triggered training window: the exact core call, skips, the event."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from unittest import mock

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.sdk.execution_time.context import OutletEventAccessors

from mlflywheel.services.errors import DriftInputError
from mlflywheel_airflow.operators import (
    DriftCheckOperator,
    DriftTriggerOperator,
    MaterializeFeaturesOperator,
)
from mlflywheel_airflow.operators.base import describe_trigger, drift_trigger_extras

pytestmark = pytest.mark.operators
AS_OF = dt.datetime(2026, 6, 4, 1, tzinfo=dt.UTC)
ASSET = Asset(name="fraud_drift", uri="flywheel://fraud/drift")
VERDICT = {"pipeline": "fraud", "check_id": "fraud/20260604T0100Z", "as_of": AS_OF.isoformat(), "decision": "retrain",
           "reasons": ["data drift: 5/10 inputs drifted", "prediction drift: score PSI 0.322 >= 0.2"],
           "detail": "emitting", "drifted_features": {"amount": {"statistic": "wasserstein", "score": 0.43}},
           "drifted_share": 0.5, "prediction_drift": {"psi": 0.32}, "report_uri": "runs:/r1/drift/report.html",
           "verdict_uri": "runs:/r1/drift/verdict.json", "verdict_path": "/v.json", "run_id": "r1",
           "retrain_window_days": 14, "reference": {"version": "3"},
           "live": {"metrics": {"roc_auc": 0.9, "pr_auc": 0.5, "log_loss": 0.1}}}


@pytest.mark.parametrize("cls", [DriftCheckOperator, DriftTriggerOperator])
def test_template_fields_are_assigned_verbatim(cls):
    extra = {"window_days": "{{ params.window_days }}", "reference": "{{ params.reference }}"} \
        if cls is DriftCheckOperator else {"verdict": "{{ ti.xcom_pull('drift_check') }}"}
    op = cls(task_id="t", pipeline="{{ params.p }}", **extra)
    for field in cls.template_fields:
        value = getattr(op, field)
        assert isinstance(value, str) and value.startswith("{{"), (field, value)


@pytest.mark.parametrize(("window", "expected"), [("None", None), ("", None), ("3", 3)])
def test_check_calls_the_core_at_the_run_time(window, expected):
    op = DriftCheckOperator(task_id="c", pipeline="fraud", window_days=window, reference="champion")
    op.interval_end = AS_OF.isoformat()
    op.interval_start = AS_OF.isoformat()  # a cron-triggered run: a point, not an interval
    result = {**VERDICT, "decision": "no_drift", "reasons": []}
    with mock.patch("mlflywheel.stages.drift_check.check.run_drift_check", return_value=result) as core:
        assert op.execute({}) == result
    args, kwargs = core.call_args
    assert args[0].name == "fraud"
    assert kwargs == {"as_of": AS_OF, "window": expected, "reference": "champion"}


def test_bad_input_fails_without_retry():
    op = DriftCheckOperator(task_id="c", pipeline="fraud")
    op.interval_end = AS_OF.isoformat()
    with mock.patch("mlflywheel.stages.drift_check.check.run_drift_check",
                    side_effect=DriftInputError("snapshot missing")), \
            pytest.raises(AirflowFailException, match="DriftInputError: snapshot missing"):
        op.execute({})
    with pytest.raises(ValueError, match="window_days must be at least 1"):
        DriftCheckOperator(task_id="c", pipeline="fraud", window_days="0").resolved_window()


@pytest.mark.parametrize("decision", ["no_drift", "suppressed", "skipped"])
def test_trigger_is_skipped_unless_the_verdict_says_retrain(decision):
    op = DriftTriggerOperator(task_id="e", pipeline="fraud", verdict={**VERDICT, "decision": decision},
                              outlets=[ASSET])
    events = OutletEventAccessors()
    with pytest.raises(AirflowSkipException, match=f"decision '{decision}'"):
        op.execute({"outlet_events": events})
    assert events[ASSET].extra == {}


def test_retrain_sets_the_event_extra_and_notifies_even_when_a_notifier_fails():
    calls = []

    def broken(context):
        raise ConnectionError("smtp down")

    op = DriftTriggerOperator(task_id="e", pipeline="fraud", verdict=VERDICT, outlets=[ASSET],
                              notifiers=[broken, calls.append])
    events = OutletEventAccessors()
    context = {"outlet_events": events}
    extra = op.execute(context)
    assert events[ASSET].extra == extra
    assert extra["reason"] == "data drift: 5/10 inputs drifted; prediction drift: score PSI 0.322 >= 0.2"
    assert extra["champion_version"] == "3" and extra["retrain_window_days"] == 14
    assert extra["report_uri"] == "runs:/r1/drift/report.html"
    assert extra["live_metrics"] == {"roc_auc": 0.9, "pr_auc": 0.5}
    assert calls == [context]
    with pytest.raises(ValueError, match="expected the drift_check result"):
        DriftTriggerOperator(task_id="e", pipeline="fraud", verdict="oops", outlets=[ASSET]).execute(context)


def _asset_triggered(extra: dict) -> dict:
    event = SimpleNamespace(extra=extra)
    return {"dag_run": SimpleNamespace(run_type="asset_triggered"), "triggering_asset_events": {ASSET: [event]}}


def test_drift_triggered_training_uses_the_events_window_and_records_the_reason():
    op = MaterializeFeaturesOperator(task_id="f", pipeline="fraud", window_days="28")
    op.interval_start, op.interval_end = "", AS_OF.isoformat()
    context = _asset_triggered({"reason": "amount drifted", "retrain_window_days": 14})
    assert drift_trigger_extras(context, "flywheel://fraud/drift") == [
        {"reason": "amount drifted", "retrain_window_days": 14}]
    assert drift_trigger_extras(context, "flywheel://ctr/drift") == []
    snapshot = {"uri": "/s", "digest": "d", "rows": 1}
    with mock.patch("mlflywheel.stages.feature_materialize.materialize_and_snapshot",
                    return_value={"snapshot": snapshot}) as core:
        result = op.execute(context)
    assert core.call_args.kwargs == {"interval_end": AS_OF, "window_days": 14}
    assert result["run_key"].endswith("/w14")
    assert describe_trigger(context) == "asset_triggered: flywheel://fraud/drift (amount drifted)"
    # a scheduled run keeps the configured window
    with mock.patch("mlflywheel.stages.feature_materialize.materialize_and_snapshot",
                    return_value={"snapshot": snapshot}) as core:
        op.execute({"dag_run": SimpleNamespace(run_type="scheduled")})
    assert core.call_args.kwargs["window_days"] == 28
