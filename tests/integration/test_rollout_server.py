"""The rollout controller against a real ``flywheel serve`` process and a real (SQLite) registry.

The server follows the registry (``@canary`` and its weight) while threads send traffic; the
controller scrapes the server's ``/metrics`` and reads its prediction log, one step at a time,
with a bake time of seconds.
"""

from __future__ import annotations

import json
import time

import pytest

from mlflywheel import deploy, rollout, tracking
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
    events = [json.loads(line)["event"] for line in rollout.ledger_path(ws, config).read_text().splitlines()]
    assert events[-3:] == ["deploy", "analysis:rollback", "deploy"]
