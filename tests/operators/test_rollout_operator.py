"""DeployCanaryOperator and BakeTrigger: the core calls, the deferral, the outcomes of a resume."""

from __future__ import annotations

import asyncio
import datetime as dt
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred

from mlflywheel.services.errors import GateMisconfigured
from mlflywheel_airflow.hooks.mlflow import MlflowHook
from mlflywheel_airflow.operators import DeployCanaryOperator
from mlflywheel_airflow.triggers.deploy_canary import BakeTrigger

pytestmark = pytest.mark.operators
START = dt.datetime(2026, 5, 10, tzinfo=dt.UTC)
END = dt.datetime(2026, 5, 11, tzinfo=dt.UTC)
APPROVED = {"name": "fraud_detector", "version": 2, "decision": "approved", "serve_variant": "onnx-fp32@CPU"}
CLIENT = object()


def state(decision, **changes):
    return {"decision": decision, "version": "2", "champion": "1", "step_index": 0, "mode": "canary",
            "weight": 5.0, "step_started": START.isoformat(), "baseline": {}, "reasons": [], "verdict_path": None,
            "metrics_url": "http://127.0.0.1:8000", "log": "/tmp/p.db", **changes}


@pytest.fixture
def op():
    op = DeployCanaryOperator(task_id="deploy_canary", pipeline="fraud", benchmarked=APPROVED,
                              prediction_log="/tmp/p.db")
    op.interval_start, op.interval_end = START.isoformat(), END.isoformat()
    with mock.patch.object(MlflowHook, "get_conn", return_value=CLIENT):
        yield op


def test_template_fields_are_assigned_verbatim():
    op = DeployCanaryOperator(task_id="t", pipeline="{{ p }}", benchmarked="{{ ti.xcom_pull('benchmark') }}",
                              prediction_log="{{ params.log }}")
    for field in ("pipeline", "benchmarked", "prediction_log", "interval_end"):
        assert field in op.template_fields
    assert (op.benchmarked, op.prediction_log) == ("{{ ti.xcom_pull('benchmark') }}", "{{ params.log }}")


def test_start_calls_the_core_then_defers_for_one_analysis_interval(op):
    with mock.patch("mlflywheel.stages.deploy_canary.controller.start", return_value=state("started")) as core, \
            pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    (ws, config, client), kwargs = core.call_args
    assert client is CLIENT and config.name == "fraud"
    assert kwargs == {"version": "2", "metrics_url": "http://127.0.0.1:8000", "log": "/tmp/p.db"}
    trigger = deferred.value.trigger
    assert isinstance(trigger, BakeTrigger) and deferred.value.method_name == "execute_complete"
    assert trigger.wait_s == config.rollout.analysis_interval_s
    assert trigger.ready_url == "http://127.0.0.1:8000/v2/health/ready"
    assert trigger.state["weight"] == 5.0


def test_nothing_to_deploy_skips_the_task(op):
    op.benchmarked = {**APPROVED, "decision": "rejected"}
    with mock.patch("mlflywheel.stages.deploy_canary.controller.start") as core, \
            pytest.raises(AirflowSkipException, match="rejected"):
        op.execute({})
    assert not core.called
    op.benchmarked = APPROVED
    reason = "model server metrics at http://127.0.0.1:8000/metrics unreadable: refused"
    with mock.patch("mlflywheel.stages.deploy_canary.controller.start",
                    return_value=state("skipped", reasons=[reason])), \
            pytest.raises(AirflowSkipException, match="unreadable: refused"):
        op.execute({})


@pytest.mark.parametrize("decision", ["wait", "advance"])
def test_a_step_in_progress_defers_again(op, decision):
    event = {"status": "success", "state": state("started"), "ready": True}
    with mock.patch("mlflywheel.stages.deploy_canary.controller.run_step",
                    return_value=state(decision, step_index=1)) as core, \
            pytest.raises(TaskDeferred) as deferred:
        op.execute_complete({}, event)
    assert core.call_args.args[2:] == (CLIENT, event["state"])
    assert deferred.value.trigger.state["step_index"] == 1


@pytest.mark.parametrize("decision", ["promote", "rollback"])
def test_promote_and_rollback_end_the_task_without_failing(op, decision):
    done = state(decision, reasons=["error_rate 0.2 > 0.01"] if decision == "rollback" else [])
    with mock.patch("mlflywheel.stages.deploy_canary.controller.run_step", return_value=done) as core, \
            mock.patch("mlflywheel.stages.deploy_canary.controller.abort") as abort:
        op.execute_complete({}, {"status": "success", "state": state("advance")})
    assert core.call_count == 1 and not abort.called  # the core rolled back itself; nothing more to undo


def test_a_failed_analysis_rolls_the_canary_back_before_failing(op):
    with mock.patch("mlflywheel.stages.deploy_canary.controller.run_step",
                    side_effect=GateMisconfigured("counter went down")), \
            mock.patch("mlflywheel.stages.deploy_canary.controller.abort") as abort, \
            pytest.raises(AirflowFailException, match="GateMisconfigured: counter went down"):
        op.execute_complete({}, {"status": "success", "state": state("wait")})
    assert abort.call_args.args[2:4] == (CLIENT, "2")
    assert "counter went down" in abort.call_args.args[4]


def test_a_trigger_error_rolls_back_and_fails(op):
    with mock.patch("mlflywheel.stages.deploy_canary.controller.run_step") as core, \
            mock.patch("mlflywheel.stages.deploy_canary.controller.abort") as abort, \
            pytest.raises(AirflowFailException, match="without success"):
        op.execute_complete({}, {"status": "error", "state": state("wait")})
    assert not core.called and abort.call_args.args[3] == "2"


def test_on_kill_takes_the_canary_off(op):
    op._rollout = state("wait")
    with mock.patch("mlflywheel.stages.deploy_canary.controller.abort") as abort:
        op.on_kill()
    assert abort.call_args.args[2:] == (CLIENT, "2", "deploy_canary killed")


def test_trigger_serializes_and_fires_once_with_the_state():
    trigger = BakeTrigger(state=state("started"), wait_s=0.05, ready_url="http://127.0.0.1:9/v2/health/ready",
                          poll_s=0.02)
    path, kwargs = trigger.serialize()
    assert path == "mlflywheel_airflow.triggers.deploy_canary.BakeTrigger"
    again = BakeTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)

    async def events():
        return [event async for event in again.run()]

    (event,) = asyncio.run(events())
    assert event.payload == {"status": "success", "state": state("started"), "ready": False}


def test_a_wait_with_no_triggerer_times_out_and_takes_the_canary_off(op):
    """Each deferral carries a timeout; when it fires (no triggerer picked the wait up), the
    task fails, and before it does the canary is taken off: it never serves unjudged."""
    from airflow.sdk.bases.operator import TriggerFailureReason
    from airflow.sdk.exceptions import TaskDeferralTimeout

    from mlflywheel_airflow.operators.deploy_canary import bake_timeout

    with mock.patch("mlflywheel.stages.deploy_canary.controller.start", return_value=state("started")), \
            pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    wait = op.config.rollout.analysis_interval_s
    assert deferred.value.timeout == bake_timeout(wait) == dt.timedelta(seconds=wait + 600)
    assert bake_timeout(900) == dt.timedelta(seconds=2700)
    with mock.patch("mlflywheel.stages.deploy_canary.controller.abort") as abort, pytest.raises(TaskDeferralTimeout):
        op.resume_execution("__fail__", {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, {})
    (_, config, client, version, reason), _ = abort.call_args
    assert (config.name, client, version) == ("fraud", CLIENT, 2)
    assert "is a triggerer running?" in reason
