"""The prediction log: WAL mode, one row per (request, row, role), time-window reads."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from mlflywheel.serving.predlog import Prediction, PredictionLog, log_path, read_predictions
from mlflywheel.settings import Workspace

pytestmark = pytest.mark.unit
T0 = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC).timestamp()


def row(request_id: str, ts: float, role: str = "champion", version: str = "1", **extra) -> Prediction:
    return Prediction(request_id=request_id, row=0, role=role, ts=ts, entity_id="7", record_id=None,
                      model_name="ctr", model_version=version, route="/predict",
                      features={"placement": "feed", "bid_price": 1.5, "clicked_mean_7d": None}, score=0.25,
                      latency_ms=1.2, **extra)


def test_log_is_wal_deduplicated_and_read_by_window(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    assert log.append([row("a", T0), row("b", T0 + 60), row("a", T0, role="shadow", version="2")]) == 3
    assert log.append([row("a", T0), row("c", T0 + 120, fallback=True)]) == 1  # "a" is already there
    with sqlite3.connect(tmp_path / "p.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    frame = read_predictions(tmp_path / "p.db", dt.datetime.fromtimestamp(T0 + 30, dt.UTC), T0 + 121)
    assert frame["request_id"].tolist() == ["b", "c"]
    assert frame["fallback"].tolist() == [False, True]
    assert str(frame["ts"].dt.tz) == "UTC"
    shadow = read_predictions(tmp_path / "p.db", role="shadow", expand_features=True)
    assert shadow[["request_id", "model_version", "feature.placement"]].values.tolist() == [["a", "2", "feed"]]
    assert shadow["feature.clicked_mean_7d"].isna().all()
    log.close()
    log.close()
    with pytest.raises(RuntimeError, match="is closed"):
        log.append([row("d", T0)])
    assert len(read_predictions(tmp_path / "p.db")) == 4


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no prediction log"):
        read_predictions(tmp_path / "missing.db")
    PredictionLog(tmp_path / "p.db").close()
    with pytest.raises(ValueError, match="timezone-aware"):
        read_predictions(tmp_path / "p.db", dt.datetime(2026, 6, 1))


def test_default_location_is_per_pipeline_under_the_workspace(tmp_path):
    assert log_path(Workspace(home=tmp_path), "fraud") == tmp_path / "serving" / "fraud" / "predictions.db"
