"""The prediction log: WAL mode, one row per answer (request, role), read per prediction by time window."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest

from mlflywheel.services.predlog import (
    Answer,
    Prediction,
    PredictionLog,
    log_path,
    read_predictions,
)
from mlflywheel.services.settings import Workspace

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


def test_an_answer_is_one_insert_read_back_row_by_row(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    features = [{"placement": "feed", "bid_price": 1.0}, {"placement": "story", "bid_price": float("nan")},
                {"placement": "feed", "bid_price": 3.0}]
    canary = Answer("r1", "canary", T0, "ctr", "2", "/predict", features[:2], [0.1, 0.2], 4.5, rows=[0, 2],
                    entity_ids=["7", None], record_ids=["t0", "t2"], fallback=[False, True])
    champion = Answer("r1", "champion", T0, "ctr", "1", "/predict", features[2:], [0.3], 4.0, rows=[1],
                      entity_ids=["8"])
    assert log.append([canary, champion]) == 3
    assert log.append([champion, Answer("r2", "champion", T0 + 1, "ctr", "1", "/v2/models/{name}/infer",
                                        features, [0.4, 0.5, 0.6], 2.0)]) == 3  # r1's champion: logged already
    with sqlite3.connect(tmp_path / "p.db") as conn:
        assert conn.execute("SELECT count(*), sum(n) FROM answers").fetchone() == (3, 6)
        assert conn.execute("SELECT count(*) FROM predictions").fetchone() == (6,)
    frame = read_predictions(tmp_path / "p.db", expand_features=True)
    assert frame[["request_id", "row", "role", "entity_id", "record_id", "score", "fallback"]].values.tolist() == [
        ["r1", 0, "canary", "7", "t0", 0.1, False], ["r1", 1, "champion", "8", None, 0.3, False],
        ["r1", 2, "canary", None, "t2", 0.2, True], ["r2", 0, "champion", None, None, 0.4, False],
        ["r2", 1, "champion", None, None, 0.5, False], ["r2", 2, "champion", None, None, 0.6, False]]
    assert frame["feature.placement"].tolist() == ["feed", "feed", "story", "feed", "story", "feed"]
    assert frame["feature.bid_price"].isna().tolist() == [False, False, True, False, True, False]
    assert frame["latency_ms"].tolist() == [4.5, 4.0, 4.5, 2.0, 2.0, 2.0]
    assert read_predictions(tmp_path / "p.db", role="canary", model_version="2")["row"].tolist() == [0, 2]
    log.close()


def test_a_log_of_the_old_layout_is_converted_in_place(tmp_path):
    path = tmp_path / "p.db"
    with sqlite3.connect(path) as conn:  # the one-row-per-prediction table of mlflywheel before answers
        conn.executescript("""
            CREATE TABLE predictions (request_id TEXT NOT NULL, row INTEGER NOT NULL, role TEXT NOT NULL,
                ts REAL NOT NULL, entity_id TEXT, record_id TEXT, model_name TEXT NOT NULL,
                model_version TEXT NOT NULL, route TEXT NOT NULL, features TEXT NOT NULL, score REAL NOT NULL,
                latency_ms REAL NOT NULL, fallback INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (request_id, row, role)) WITHOUT ROWID;
            CREATE INDEX predictions_ts ON predictions (ts);""")
        conn.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, 'ctr', '1', '/predict', ?, ?, 1.5, ?)", [
            ("a", 0, "champion", T0, "7", "t1", '{"placement":"feed","bid_price":null}', 0.25, 0),
            ("a", 1, "champion", T0, None, None, '{"placement":"story","bid_price":2.0}', 0.5, 1),
            ("b", 0, "shadow", T0 + 1, "9", None, '{"placement":"feed","bid_price":1.0}', 0.75, 0)])
    before = read_predictions(path, expand_features=True)  # a reader works on the old layout too
    log = PredictionLog(path)
    after = read_predictions(path, expand_features=True)
    assert after.drop(columns="features").equals(before.drop(columns="features"))
    assert [json.loads(f) for f in after["features"]] == [json.loads(f) for f in before["features"]]
    assert log.append([row("a", T0)]) == 0  # converted rows still deduplicate
    with sqlite3.connect(path) as conn:
        kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name IN ('answers', 'predictions')"))
    assert kinds == {"answers": "table", "predictions": "view"}
    log.close()
    PredictionLog(path).close()  # opening a converted log again changes nothing
    assert read_predictions(path, expand_features=True).equals(after)


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no prediction log"):
        read_predictions(tmp_path / "missing.db")
    PredictionLog(tmp_path / "p.db").close()
    with pytest.raises(ValueError, match="timezone-aware"):
        read_predictions(tmp_path / "p.db", dt.datetime(2026, 6, 1))


def test_default_location_is_per_pipeline_under_the_workspace(tmp_path):
    assert log_path(Workspace(home=tmp_path), "fraud") == tmp_path / "serving" / "fraud" / "predictions.db"
