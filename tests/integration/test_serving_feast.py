"""``/predict`` reads the same store features training reads: a real Feast repo, applied and materialized."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from mlflywheel.services.config import load_pipeline
from mlflywheel.services.data.generate import write_landing
from mlflywheel.services.features import load_store, offline_source_dir
from mlflywheel.services.online import feast_lookup
from mlflywheel.services.settings import Workspace
from mlflywheel.stages.feature_materialize import materialize_and_snapshot
from tests import helpers

pytestmark = pytest.mark.integration
UNKNOWN = 10**9


def test_online_lookup_returns_the_materialized_features_and_none_for_unknown(tmp_path, monkeypatch, ctr_onnx):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    ws = Workspace.from_env().ensure()
    config = load_pipeline(ws.pipelines_dir / "ctr.yaml")
    end = dt.datetime.now(dt.UTC).date()
    write_landing(config, ws, start=end - dt.timedelta(days=9), end=end)
    materialize_and_snapshot(config, ws, interval_end=dt.datetime.combine(end, dt.time(), dt.UTC), window_days=3)
    # what materialize loaded: the newest row per ad, stamped at the end of the last landing day
    table = pd.read_parquet(offline_source_dir(load_store(ws), "ad_stats") / f"{end - dt.timedelta(days=1)}.parquet")
    expected = table.set_index("ad_id").head(20)

    lookup = feast_lookup(ws, config, ttl_s=0)
    ids = [int(i) for i in expected.index] + [UNKNOWN]
    found = lookup.lookup(ids)

    assert found[-1] is None
    for ad_id, row in zip(ids[:-1], found[:-1], strict=True):
        assert set(row) == set(lookup.features)
        for name, value in row.items():
            want = expected.loc[ad_id, name]
            assert (value is None and pd.isna(want)) or math.isclose(value, float(want), rel_tol=1e-9), (ad_id, name)

    with helpers.running_server(ctr_onnx, tmp_path / "p.db", online=lookup) as s:
        records = [{"ad_id": i, "placement": "feed", "device": "ios", "position": 1, "bid_price": 2.0}
                   for i in (ids[0], UNKNOWN)]
        answer = s.client.post("/predict", json={"records": records}).json()
    assert [p["fallback"] for p in answer["predictions"]] == [False, True]
