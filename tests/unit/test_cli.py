"""The ``flywheel`` CLI: sample data, config checks, the demo's log reading."""

from __future__ import annotations

import pandas as pd
import pytest

from mlflywheel.tools.cli import main, task_timings

pytestmark = pytest.mark.unit


def test_generate_writes_daily_partitions_and_injects_defects(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    assert main(["data", "generate", "--pipeline", "ctr", "--days", "3", "--end", "2026-05-04",
                 "--bad", "duplicate_ids"]) == 0
    root = tmp_path / "landing" / "ctr" / "impressions"
    assert sorted(p.name for p in root.iterdir()) == ["ds=2026-05-01", "ds=2026-05-02", "ds=2026-05-03"]
    assert not pd.read_parquet(root / "ds=2026-05-03" / "part-00000.parquet")["impression_id"].is_unique
    assert pd.read_parquet(root / "ds=2026-05-02" / "part-00000.parquet")["impression_id"].is_unique
    assert "injected bad data 'duplicate_ids'" in capsys.readouterr().out


def test_config_check(tmp_path, capsys):
    assert main(["config", "check"]) == 0
    assert "ok    config" in capsys.readouterr().out
    bad = tmp_path / "fraud.yaml"
    bad.write_text("name: fraud\ncolour: blue\n")
    assert main(["config", "check", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert "FAIL  config" in out and "key 'colour': unknown key" in out
    assert "1 of 1 pipeline(s) failed validation" in err


def test_bad_scenario_is_a_clean_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    assert main(["data", "generate", "--pipeline", "fraud", "--days", "1", "--scenario", "xmas"]) == 2
    assert "unknown scenario 'xmas'" in capsys.readouterr().err


def test_task_timings_from_a_dags_test_log():
    log = "\n".join([
        "2026-11-21T06:52:31.912252Z [info ] [DAG TEST] starting task_id=validate map_index=-1 [x]",
        "2026-11-21T06:52:41.133691Z [info ] [DAG TEST] end task task_id=validate map_index=-1 [x]",
        "2026-11-21T06:52:41.2Z [info ] [DAG TEST] starting task_id=train map_index=-1 [x]",
        "2026-11-21T06:52:43.7Z [info ] [DAG TEST] end task task_id=train map_index=-1 [x]",
        "2026-11-21T06:52:44Z [info ] DagRun Finished: dag_id=fraud__train, logical_date=x, state=failed, "
        "run_type=manual",
    ])
    assert task_timings(log) == ({"validate": 9.22, "train": 2.5}, "failed")
