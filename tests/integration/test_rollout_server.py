"""The rollout controller against a real ``flywheel serve`` process and a real (SQLite) registry.

The server follows the registry (``@canary`` and its weight) while threads send traffic; the
controller scrapes the server's ``/metrics`` and reads its prediction log, one step at a time,
with a bake time of seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from mlflywheel.services import deployments, tracking
from mlflywheel.stages.deploy_canary import controller as deploy
from tests import helpers
from tests.integration.test_serving_server import Load, Server, registry  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def roll(ws, config, client, version, url, log, timeout=60.0):
    """Start the canary and analyse every 0.5 s until the rollout ends; the states seen."""
    states = [deploy.start(ws, config, client, version=version, metrics_url=url, log=log)]
    deadline = time.monotonic() + timeout
    while states[-1]["decision"] not in deploy.DONE:
        assert time.monotonic() < deadline, states[-1]
        time.sleep(0.5)
        states.append(deploy.run_step(ws, config, client, states[-1]))
    return states


def test_healthy_canary_is_promoted_through_the_steps_and_a_diverging_one_rolled_back(registry, tmp_path):  # noqa: F811
    ws, ctr, files = registry
    # seconds-long bakes; latency limits loose (this checks the control loop, not this machine's p99)
    config = ctr.model_copy(update={"rollout": ctr.rollout.model_copy(update={
        "steps": [50.0, 100.0], "bake_minutes": 0.05, "min_requests": 30, "max_p99_ms": 2000.0,
        "max_p99_ratio": 20.0})})
    log = tmp_path / "predictions.db"
    client = tracking.client(ws)
    server = Server(ws, log, f"log_path={log}")
    load = Load(server.url, threads=4)
    try:
        same = helpers.publish_onnx_version(ws, config, files["1"])  # a retrain that scores like the champion
        healthy = roll(ws, config, client, same, server.url, log)
        other = helpers.publish_onnx_version(ws, config, files["2"])  # 3 boosting rounds: other scores
        diverging = roll(ws, config, client, other, server.url, log)
        aliases = {a: str(v) for a, v in client.get_registered_model(config.model_name).aliases.items()}
    finally:
        load.stop()
        server.stop()
        client.set_registered_model_alias(config.model_name, "champion", "1")
    assert [s["decision"] for s in healthy][0] == "started" and healthy[-1]["decision"] == "promote"
    assert "advance" in [s["decision"] for s in healthy] and "rollback" not in [s["decision"] for s in healthy]
    assert {s["weight"] for s in healthy} == {50.0, 100.0}
    assert diverging[-1]["decision"] == "rollback" and diverging[-1]["step_index"] == 0
    assert any(r.startswith("score_psi") for r in diverging[-1]["reasons"]), diverging[-1]["reasons"]
    assert load.count(500) == 0
    assert aliases == {"champion": same, "previous_champion": "1"}
    verdict = json.loads(open(diverging[-1]["verdict_path"]).read())
    assert verdict["action"] == "rollback" and verdict["canary_version"] == other
    events = [json.loads(line)["event"] for line in deployments.ledger_path(ws, config).read_text().splitlines()]
    assert events[-3:] == ["deploy", "analysis:rollback", "deploy"]


def test_replayed_traffic_with_delayed_labels_drives_a_full_rollout(registry, tmp_path):  # noqa: F811
    """The demo loop on one machine: the replayer sends held-out rows at a set rate and publishes
    each row's label a second after its answer; every step's label test runs on those labels."""
    import threading

    from mlflywheel.services.data.labels import read_labels
    from mlflywheel.tools.replay import replay

    ws, ctr, files = registry
    config = ctr.model_copy(update={"rollout": ctr.rollout.model_copy(update={
        "steps": [50.0, 100.0], "bake_minutes": 0.15, "min_requests": 150, "min_labels": 100,
        # this test is about traffic, labels and the loop, not about this (shared) machine's latency
        "max_p99_ms": 1e6, "max_p99_ratio": 1e3})})
    source = tmp_path / "held_out.parquet"
    frame = helpers.ctr_frame(days=2)
    # many users, as in production: with 400 ads, hashing whole ads to an arm makes the arms'
    # score distributions differ by which ads they drew (PSI ~0.2 for one model on both arms)
    frame["ad_id"] = range(1, len(frame) + 1)
    frame.to_parquet(source)
    log = tmp_path / "predictions.db"
    client = tracking.client(ws)
    server = Server(ws, log, f"log_path={log}")
    reports = []
    sender = threading.Thread(target=lambda: reports.append(replay(
        config, ws, server.url, rate=40, duration_s=60, label_delay_s=1.0, feast=False, source=source)))
    try:
        sender.start()
        same = helpers.publish_onnx_version(ws, config, files["1"])
        states = roll(ws, config, client, same, server.url, log, timeout=90)
        sender.join(120)
        aliases = {a: str(v) for a, v in client.get_registered_model(config.model_name).aliases.items()}
    finally:
        server.stop()
        client.set_registered_model_alias(config.model_name, "champion", "1")
    report = reports[0].summary()
    # open loop: 40/s for 60 s; a request that would exceed 64 in flight is dropped, not queued
    assert report["sent"] + report["dropped"] == 2400 and report["sent"] > 1000
    assert report["statuses"] == {"200": report["sent"]}  # no errors, no timeouts
    assert report["labels_published"] == report["sent"]
    assert states[-1]["decision"] == "promote" and aliases["champion"] == same, (report, states[-1]["reasons"])
    # each step judged the arms on labels that arrived after their predictions
    judged = [s for s in states if s["decision"] in ("advance", "promote")]
    assert len(judged) == 2
    for state in judged:
        verdict = json.loads(open(state["verdict_path"]).read())
        labels = {c["name"]: c for c in verdict["checks"]}["label_hit_rate_diff"]
        assert labels["passed"] is True, verdict["checks"]
    arrived = read_labels(config, ws, since=dt.date.today() - dt.timedelta(days=1), as_of=dt.datetime.now(dt.UTC))
    assert len(arrived) == report["sent"]


def test_a_slow_canary_is_rolled_back_on_latency_before_its_bake_ends(registry, tmp_path):  # noqa: F811
    """Correct scores, 60 extra MatMuls a row: the p99 check rolls it back at the first
    analysis with enough canary requests, long before the step's bake time."""
    import numpy as np

    from mlflywheel.services.runtime import OnnxModel

    ws, ctr, files = registry
    slow = helpers.slow_onnx(files["1"], tmp_path / "slow" / "model.onnx")
    frame = helpers.ctr_frame(days=1).head(50)
    same = [OnnxModel(path).predict_proba(frame) for path in (files["1"], slow)]
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)  # the same model, only slower
    config = ctr.model_copy(update={"rollout": ctr.rollout.model_copy(update={
        "steps": [50.0, 100.0], "bake_minutes": 2.0, "min_requests": 20, "max_p99_ms": 25.0,
        "max_p99_ratio": 3.0, "max_score_psi": 10.0})})
    log = tmp_path / "predictions.db"
    client = tracking.client(ws)
    server = Server(ws, log, f"log_path={log}")
    load = Load(server.url, threads=4)
    try:
        version = helpers.publish_onnx_version(ws, config, slow)
        started = time.monotonic()
        states = roll(ws, config, client, version, server.url, log, timeout=110)
        took = time.monotonic() - started
        aliases = {a: str(v) for a, v in client.get_registered_model(config.model_name).aliases.items()}
    finally:
        load.stop()
        server.stop()
        client.set_registered_model_alias(config.model_name, "champion", "1")
    assert states[-1]["decision"] == "rollback" and states[-1]["step_index"] == 0
    assert any(r.startswith(("p99_ms", "p99_ratio")) for r in states[-1]["reasons"]), states[-1]["reasons"]
    assert took < 120 and "canary" not in aliases and aliases["champion"] == "1"
    assert load.count(500) == 0
