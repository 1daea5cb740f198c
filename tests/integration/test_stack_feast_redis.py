"""Feast on Redis by configuration alone: ``FLYWHEEL_FEAST_ONLINE_STORE`` and
``FLYWHEEL_FEAST_PROJECT`` turn the repo's SQLite online store into the machine's Redis.

The real ``feature_materialize`` step loads Redis; the online read must give the values a
point-in-time join gives at the interval end, and the model server's Feast lookup reads
the same rows. Each test owns a unique Feast project (Redis keys end with it) and deletes
its keys afterwards.
"""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from tests.integration import stack

pytestmark = pytest.mark.integration
UNKNOWN = 10**9


@pytest.fixture
def redis_ws(tmp_path, monkeypatch):
    from mlflywheel.services.settings import Workspace

    with stack.redis_project() as redis_db:
        monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
        monkeypatch.setenv("FLYWHEEL_FEAST_ONLINE_STORE", f"redis://{redis_db.host}:{redis_db.port}/{redis_db.db}")
        monkeypatch.setenv("FLYWHEEL_FEAST_PROJECT", redis_db.project)
        yield Workspace.from_env().ensure(), redis_db


def _project_keys(redis_db) -> list[bytes]:
    import redis

    client = redis.Redis(host=redis_db.host, port=redis_db.port, db=redis_db.db)
    try:
        return list(client.scan_iter(match=f"*{redis_db.project}".encode(), count=1000))
    finally:
        client.close()


def test_materialize_into_redis_and_read_the_point_in_time_values_back(redis_ws, ctr_onnx):
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.data.generate import write_landing
    from mlflywheel.services.features import load_store, offline_source_dir
    from mlflywheel.services.online import feast_lookup
    from mlflywheel.stages.feature_materialize import materialize_and_snapshot
    from tests import helpers

    ws, redis_db = redis_ws
    store = load_store(ws)
    assert store.config.online_store.type == "redis"
    assert store.config.online_store.connection_string == f"{redis_db.host}:{redis_db.port},db={redis_db.db}"
    assert store.project == redis_db.project

    config = load_pipeline(ws.pipelines_dir / "ctr.yaml")
    end = dt.datetime.now(dt.UTC).date()
    interval_end = dt.datetime.combine(end, dt.time(), dt.UTC)
    write_landing(config, ws, start=end - dt.timedelta(days=9), end=end)
    result = materialize_and_snapshot(config, ws, interval_end=interval_end, window_days=3)
    assert result["snapshot"]["rows"] > 0
    # the online rows went to Redis under this project, none to the repo's SQLite file
    keys = _project_keys(redis_db)
    assert keys
    assert not (ws.feast_dir / "online_store.db").exists()

    store = load_store(ws)
    view = config.features.views[0]
    table = pd.read_parquet(offline_source_dir(store, view.name) / f"{end - dt.timedelta(days=1)}.parquet")
    ids = sorted(int(i) for i in table[view.entity].unique())[:25]
    assert len(keys) >= len(table[view.entity].unique())
    service = store.get_feature_service(config.features.feature_service)
    entity_df = pd.DataFrame({view.entity: ids, "event_timestamp": [pd.Timestamp(interval_end)] * len(ids)})
    offline = (store.get_historical_features(entity_df=entity_df, features=service, full_feature_names=False)
               .to_df().set_index(view.entity))
    online = store.get_online_features(features=service, entity_rows=[{view.entity: i} for i in ids]).to_dict()
    names = [n for n in online if n != view.entity]
    assert set(names) == set(view.feature_names())
    for row, entity in enumerate(online[view.entity]):
        for name in names:
            want, got = offline.loc[entity, name], online[name][row]
            assert (got is None and pd.isna(want)) or math.isclose(got, float(want), rel_tol=1e-9), (entity, name)

    # the model server's lookup reads the same Redis rows
    lookup = feast_lookup(ws, config, ttl_s=0)
    found = lookup.lookup([*ids[:5], UNKNOWN])
    assert found[-1] is None
    for entity, row in zip(ids[:5], found[:-1], strict=True):
        for name, value in row.items():
            want = offline.loc[entity, name]
            assert (value is None and pd.isna(want)) or math.isclose(value, float(want), rel_tol=1e-9)
    with helpers.running_server(ctr_onnx, ws.home / "p.db", online=lookup) as s:
        records = [{"ad_id": i, "placement": "feed", "device": "ios", "position": 1, "bid_price": 2.0}
                   for i in (ids[0], UNKNOWN)]
        answer = s.client.post("/predict", json={"records": records}).json()
    assert [p["fallback"] for p in answer["predictions"]] == [False, True]


def test_projects_do_not_see_each_others_rows(redis_ws, monkeypatch):
    """A second project on the same Redis db reads nothing of the first one's rows."""
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.data.generate import write_landing
    from mlflywheel.services.features import apply_repo, load_store
    from mlflywheel.stages.feature_materialize import materialize_and_snapshot

    ws, redis_db = redis_ws
    config = load_pipeline(ws.pipelines_dir / "ctr.yaml")
    end = dt.datetime.now(dt.UTC).date()
    write_landing(config, ws, start=end - dt.timedelta(days=9), end=end)
    materialize_and_snapshot(config, ws, interval_end=dt.datetime.combine(end, dt.time(), dt.UTC), window_days=1)
    entity = config.features.views[0].entity
    service_name = config.features.feature_service

    with stack.redis_project() as other:
        from mlflywheel.services.settings import Workspace

        monkeypatch.setenv("FLYWHEEL_FEAST_PROJECT", other.project)
        other_ws = Workspace.from_env()
        store = load_store(other_ws)
        apply_repo(store, other_ws)
        service = store.get_feature_service(service_name)
        online = store.get_online_features(features=service, entity_rows=[{entity: 1}, {entity: 2}]).to_dict()
        assert all(v is None for name, values in online.items() if name != entity for v in values)
        assert _project_keys(other) == []
