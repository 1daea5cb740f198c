"""Rollout controller: start, one analysis step at a time, promote and rollback on a real SQLite registry."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from mlflywheel.services import deployments, tracking
from mlflywheel.services.model_server import ServerUnavailable
from mlflywheel.services.predlog import Prediction, PredictionLog
from mlflywheel.services.settings import Workspace
from mlflywheel.stages.deploy_canary import controller as deploy
from tests import helpers
from tests.unit.test_rollout import aliases, scrape

pytestmark = pytest.mark.unit
T0 = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
SCORES = np.random.default_rng(1).beta(1, 20, 4000)
NO_SERVER = "http://127.0.0.1:9"  # discard port: nothing listens


@pytest.fixture
def rollout_ws(tmp_path, monkeypatch, ctr_onnx):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    ws = Workspace.from_env().ensure()
    config = ctr_onnx.config.model_copy(update={"rollout": ctr_onnx.config.rollout.model_copy(
        update={"steps": [20.0, 100.0], "bake_minutes": 1.0, "min_requests": 100})})
    v1, v2 = (helpers.publish_onnx_version(ws, config, ctr_onnx.files[v]) for v in ("1", "2"))
    client = tracking.client(ws)
    client.set_registered_model_alias(config.model_name, "champion", v1)
    return ws, config, client, v1, v2, tmp_path / "predictions.db"


def log_step(path, start, v1, v2, n=500):
    """Champion and canary predictions over the first 50 s of a step (same score distribution)."""
    log = PredictionLog(path)
    log.append([Prediction(f"{start:%H%M}-{i}", 0, "canary" if i % 2 else "champion", start.timestamp() + i / n * 50,
                           str(i), None, "m", v2 if i % 2 else v1, "/predict", {}, float(SCORES[i]), 1.0)
                for i in range(2 * n)])
    log.close()


def test_start_fails_closed_without_a_server_or_a_champion(rollout_ws):
    ws, config, client, v1, v2, log = rollout_ws
    state = deploy.start(ws, config, client, version=v2, metrics_url=NO_SERVER, log=log)
    assert state["decision"] == "skipped" and "unreadable" in state["reasons"][0]
    assert aliases(client, config.model_name) == {"champion": v1}
    again = deploy.start(ws, config, client, version=v1, metrics_url=NO_SERVER, log=log)
    assert again["decision"] == "skipped" and "already @champion" in again["reasons"][0]
    client.delete_registered_model_alias(config.model_name, "champion")
    first = deploy.start(ws, config, client, version=v2, metrics_url=NO_SERVER, log=log)
    assert first["decision"] == "skipped" and "no @champion" in first["reasons"][0]
    assert aliases(client, config.model_name) == {}
    ledger = [json.loads(line) for line in deployments.ledger_path(ws, config).read_text().splitlines()]
    assert [e["event"] for e in ledger] == ["deploy_canary:skipped"] * 3
    assert json.loads(json.dumps(state)) == state


def started(rollout_ws, monkeypatch, served):
    ws, config, client, v1, v2, log = rollout_ws
    monkeypatch.setattr(deploy, "scrape", lambda url: scrape(served))
    state = deploy.start(ws, config, client, version=v2, metrics_url="http://server", log=log, now=T0)
    assert state["decision"] == "started" and state["weight"] == 20.0
    assert aliases(client, config.model_name) == {"champion": v1, "canary": v2}
    assert client.get_registered_model(config.model_name).tags["flywheel.canary_weight"] == "20"
    return state


def test_healthy_canary_waits_out_the_bake_then_advances_then_promotes(rollout_ws, monkeypatch):
    ws, config, client, v1, v2, log = rollout_ws
    state = started(rollout_ws, monkeypatch, {v1: (100, 0, 0.002), v2: (0, 0, 0.002)})
    log_step(log, T0, v1, v2)
    after = scrape({v1: (1100, 1, 0.002), v2: (500, 0, 0.002)})
    early = deploy.analyse(ws, config, client, state, metrics_text=after, now=T0 + dt.timedelta(seconds=55))
    assert early["decision"] == "wait" and early["step_index"] == 0 and early["reasons"] == []
    step1 = deploy.analyse(ws, config, client, early, metrics_text=after, now=T0 + dt.timedelta(seconds=61))
    assert (step1["decision"], step1["step_index"], step1["weight"]) == ("advance", 1, 100.0)
    assert client.get_registered_model(config.model_name).tags["flywheel.canary_weight"] == "100"
    t1 = T0 + dt.timedelta(seconds=61)
    log_step(log, t1, v1, v2)
    later = scrape({v1: (1600, 1, 0.002), v2: (1000, 0, 0.002)})
    done = deploy.analyse(ws, config, client, step1, metrics_text=later, now=t1 + dt.timedelta(seconds=61))
    assert done["decision"] == "promote"
    assert aliases(client, config.model_name) == {"champion": v2, "previous_champion": v1}
    verdict = json.loads(open(done["verdict_path"]).read())
    assert verdict["action"] == "promote" and verdict["step"]["weight"] == 100.0
    assert json.loads(json.dumps(done)) == done


def test_erroring_canary_is_rolled_back_at_the_first_analysis(rollout_ws, monkeypatch):
    ws, config, client, v1, v2, log = rollout_ws
    state = started(rollout_ws, monkeypatch, {v1: (100, 0, 0.002)})
    log_step(log, T0, v1, v2)
    after = scrape({v1: (1100, 1, 0.002), v2: (400, 100, 0.002)})
    out = deploy.analyse(ws, config, client, state, metrics_text=after, now=T0 + dt.timedelta(seconds=10))
    assert out["decision"] == "rollback" and out["reasons"][0] == "error_rate 0.2 > 0.01"
    assert aliases(client, config.model_name) == {"champion": v1}
    assert client.get_registered_model(config.model_name).tags["flywheel.canary_weight"] == "0"
    ledger = [json.loads(line)["event"] for line in deployments.ledger_path(ws, config).read_text().splitlines()]
    assert ledger == ["deploy", "analysis:rollback", "deploy"]


def test_an_unreadable_server_mid_rollout_rolls_back(rollout_ws, monkeypatch):
    ws, config, client, v1, v2, log = rollout_ws
    state = started(rollout_ws, monkeypatch, {v1: (100, 0, 0.002)})
    monkeypatch.setattr(deploy, "scrape", _unreadable)
    out = deploy.run_step(ws, config, client, state)
    assert out["decision"] == "rollback" and "unreadable" in out["reasons"][0]
    assert aliases(client, config.model_name) == {"champion": v1}


def _unreadable(url):
    raise ServerUnavailable(f"model server metrics at {url}/metrics unreadable: refused")


def test_cli_rollback_restores_the_previous_champion(rollout_ws, capsys):
    from mlflywheel.tools import cli

    ws, config, client, v1, v2, log = rollout_ws
    deployments.set_canary(ws, config, client, v2, 100, "step")
    deployments.promote(ws, config, client, v2, "all steps passed")
    assert cli.main(["rollback", config.name]) == 0
    assert aliases(client, config.model_name) == {"champion": v1, "previous_champion": v2}
    assert json.loads(capsys.readouterr().out)["champion"] == v1
    assert cli.main(["rollback", config.name, "--to", v2, "--reason", "v1 misbehaves"]) == 0
    assert aliases(client, config.model_name) == {"champion": v2, "previous_champion": v1}
    last = json.loads(deployments.ledger_path(ws, config).read_text().splitlines()[-1])
    assert (last["event"], last["champion"], last["reason"]) == ("deploy", v2, "v1 misbehaves")
    client.delete_registered_model_alias(config.model_name, "previous_champion")
    assert cli.main(["rollback", config.name]) == 1
    assert "has no @previous_champion" in capsys.readouterr().err


def test_rollback_to_a_missing_or_unexported_version_moves_nothing(rollout_ws):
    from mlflywheel.services.errors import RegistryError

    ws, config, client, v1, v2, _ = rollout_ws
    with pytest.raises(RegistryError, match="has no version '99'; nothing moved"):
        deployments.restore_previous(ws, config, client, "typo", to_version="99")
    client.set_model_version_tag(config.model_name, v2, "flywheel.onnx.fp32.published", "false")
    with pytest.raises(RegistryError, match=f"v{v2} has no published ONNX variant"):
        deployments.restore_previous(ws, config, client, "not exported", to_version=v2)
    assert aliases(client, config.model_name) == {"champion": v1}
    assert not deployments.ledger_path(ws, config).exists()


def test_shadow_first_bakes_on_shadow_copies_then_routes_traffic(rollout_ws, monkeypatch):
    ws, config, client, v1, v2, log = rollout_ws
    config = config.model_copy(update={"rollout": config.rollout.model_copy(update={
        "strategy": "shadow_first", "shadow_bake_minutes": 1.0})})
    monkeypatch.setattr(deploy, "scrape", lambda url: scrape({v1: (100, 0, 0.002)}))
    state = deploy.start(ws, config, client, version=v2, metrics_url="http://server", log=log, now=T0)
    tags = client.get_registered_model(config.model_name).tags
    assert (state["mode"], tags["flywheel.serving_mode"], tags["flywheel.canary_weight"]) == ("shadow", "shadow", "0")
    PredictionLog(log).append([Prediction(f"s{i}", 0, role, T0.timestamp() + i / 20, str(i), None, "m", version,
                                          "/predict", {}, float(SCORES[i]), 1.0)
                               for i in range(1000) for role, version in (("champion", v1), ("shadow", v2))])
    out = deploy.analyse(ws, config, client, state, metrics_text=scrape({v1: (1100, 0, 0.002)}),
                         now=T0 + dt.timedelta(seconds=61))
    assert (out["decision"], out["mode"], out["weight"]) == ("advance", "canary", 20.0), out["reasons"]
    tags = client.get_registered_model(config.model_name).tags
    assert (tags["flywheel.serving_mode"], tags["flywheel.canary_weight"]) == ("canary", "20")


def test_delayed_labels_showing_a_worse_canary_roll_it_back(rollout_ws, monkeypatch):
    import pandas as pd

    from mlflywheel.services.data.io import write_parquet_atomic
    from mlflywheel.services.data.labels import LABEL_TS, labels_dir

    ws, config, client, v1, v2, log = rollout_ws
    state = started(rollout_ws, monkeypatch, {v1: (100, 0, 0.002)})
    truth = [i % 2 for i in range(800)]
    rows = []
    for i, label in enumerate(truth):  # same score distribution per arm; the canary decides the opposite
        canary = i % 2 == 0
        score = (0.1 if label else 0.9) if canary else (0.9 if label else 0.1)
        rows.append(Prediction(f"l{i}", 0, "canary" if canary else "champion", T0.timestamp() + i / 20, str(i),
                               f"t{i}", "m", v2 if canary else v1, "/predict", {}, score, 1.0))
    PredictionLog(log).append(rows)
    write_parquet_atomic(pd.DataFrame({config.data.id_column: [f"t{i}" for i in range(800)], config.data.label: truth,
                                       LABEL_TS: pd.Timestamp(T0 + dt.timedelta(seconds=50))}),
                         labels_dir(config, ws) / f"ds={T0.date()}" / "events-x.parquet")
    after = scrape({v1: (500, 0, 0.002), v2: (400, 0, 0.002)})
    out = deploy.analyse(ws, config, client, state, metrics_text=after, now=T0 + dt.timedelta(seconds=61))
    assert out["decision"] == "rollback" and len(out["reasons"]) == 1
    assert out["reasons"][0].startswith("labels: canary significantly worse (canary 0.0000 vs champion 1.0000")
    assert aliases(client, config.model_name) == {"champion": v1}
