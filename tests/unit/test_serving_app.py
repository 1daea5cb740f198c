"""The model server in process: scores, store features, routing, shadow, hot reload, metrics."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from mlflywheel.services.online import CachedLookup
from mlflywheel.services.predlog import read_predictions
from mlflywheel.services.runtime import OnnxModel
from tests.helpers import ctr_record

pytestmark = pytest.mark.unit
STORE = {7: {"clicked_count_1d": 4, "clicked_count_7d": 30, "clicked_mean_7d": 0.08, "bid_price_mean_7d": 1.2},
         8: {"clicked_count_1d": 0, "clicked_count_7d": 2, "clicked_mean_7d": None, "bid_price_mean_7d": 3.0}}
REQUEST_ONLY = ("ad_id", "placement", "device", "position", "bid_price")


def expected_scores(path, records):
    model = OnnxModel(path)
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "ad_id"} for r in records])
    frame = frame.astype({c: "float32" for c in frame.columns if c not in ("placement", "device")})
    return model.predict_proba(frame)


def store_lookup(calls=None):
    def fetch(ids):
        if calls is not None:
            calls.append(list(ids))
        return [STORE.get(i) for i in ids]

    return CachedLookup(fetch, list(STORE[7]), ttl_s=60)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def request_part(record):
    return {k: record[k] for k in REQUEST_ONLY}


def test_predict_scores_what_the_model_scores_and_logs_each_row(serve_ctr, ctr_onnx):
    records = [ctr_record(7), ctr_record(8, placement="sidebar", bid_price=9.0, clicked_mean_7d=None)]
    with serve_ctr() as s:
        response = s.client.post("/predict", json={"records": records}, headers={"x-request-id": "req-1"})
        again = s.client.post("/predict", json={"records": records}, headers={"x-request-id": "req-1"})
    assert response.status_code == 200 and again.status_code == 200
    answer = response.json()
    assert answer["request_id"] == "req-1" and response.headers["x-request-id"] == "req-1"
    scores = [p["score"] for p in answer["predictions"]]
    np.testing.assert_allclose(scores, expected_scores(ctr_onnx.files["1"], records), rtol=1e-6)
    assert [(p["entity_id"], p["model_version"], p["role"], p["fallback"]) for p in answer["predictions"]] == [
        (7, "1", "champion", False), (8, "1", "champion", False)]
    logged = read_predictions(s.log_path, expand_features=True)
    assert len(logged) == 2  # the retried request id is logged once
    assert list(logged["entity_id"]) == ["7", "8"] and set(logged["role"]) == {"champion"}
    assert list(logged["score"]) == scores and (logged["latency_ms"] > 0).all()
    assert logged["feature.placement"].tolist() == ["feed", "sidebar"]
    assert logged["feature.clicked_mean_7d"].isna().tolist() == [False, True]


def test_store_features_are_merged_and_unknown_entities_fall_back_flagged(serve_ctr, ctr_onnx):
    calls = []
    with serve_ctr(online=store_lookup(calls)) as s:
        records = [request_part(ctr_record(7)), request_part(ctr_record(8)), request_part(ctr_record(999))]
        answer = s.client.post("/predict", json={"records": records}).json()
        s.client.post("/predict", json={"records": records[:1]})
        sent_store_feature = s.client.post("/predict", json={"records": [{**records[0], "clicked_count_7d": 1}]})
    merged = [{**r, **(STORE.get(r["ad_id"]) or dict.fromkeys(STORE[7]))} for r in records]
    np.testing.assert_allclose([p["score"] for p in answer["predictions"]],
                               expected_scores(ctr_onnx.files["1"], merged), rtol=1e-6)
    assert [p["fallback"] for p in answer["predictions"]] == [False, False, True]
    # the warm-up probe at startup, then one lookup for the batch; the second request hit the cache
    assert calls == [[-1], [7, 8, 999]]
    assert sent_store_feature.status_code == 422
    assert sent_store_feature.json()["field"] == "records[0].clicked_count_7d"
    logged = read_predictions(s.log_path)
    assert logged["fallback"].tolist() == [False, False, True, False]


def test_unknown_entity_can_be_refused_instead(serve_ctr):
    with serve_ctr(online=store_lookup(), unknown_entity="reject") as s:
        refused = s.client.post("/predict", json={"records": [request_part(ctr_record(7)),
                                                              request_part(ctr_record(999))]})
    assert refused.status_code == 404
    assert refused.json() == {"code": "unknown_entity", "field": "records[1]",
                              "message": "entity 999 has no features in the online store"}
    assert read_predictions(s.log_path).empty


def test_canary_weight_splits_entities_consistently(serve_ctr):
    tags = {"flywheel.canary_weight": "50"}
    with serve_ctr(aliases={"champion": "1", "canary": "2"}, tags=tags) as s:
        first = [s.client.post("/predict", json={"records": [ctr_record(i)]}).json()["predictions"][0]
                 for i in range(1, 61)]
        second = [s.client.post("/predict", json={"records": [ctr_record(i)]}).json()["predictions"][0]
                  for i in range(1, 61)]
        metrics = s.client.get("/metrics").text
    assert [p["model_version"] for p in first] == [p["model_version"] for p in second]
    assert {(p["model_version"], p["role"]) for p in first} == {("1", "champion"), ("2", "canary")}
    assert 15 <= sum(p["role"] == "canary" for p in first) <= 45
    assert "flywheel_serving_canary_weight_percent 50.0" in metrics
    logged = read_predictions(s.log_path)
    assert set(zip(logged["model_version"], logged["role"], strict=True)) == {("1", "champion"), ("2", "canary")}


def test_shadow_is_logged_and_compared_but_never_returned(serve_ctr):
    with serve_ctr(aliases={"champion": "1", "challenger": "2"}, tags={"flywheel.serving_mode": "shadow"}) as s:
        answers = [s.client.post("/predict", json={"records": [ctr_record(i)]},
                                 headers={"x-request-id": f"r{i}"}).json() for i in range(1, 21)]
        shadow_ok = s.server.metrics.shadow.labels("2", "ok")
        wait_until(lambda: shadow_ok._value.get() == 20)  # shadow copies finish after the answers
        challenger = s.server.watcher.current.models["challenger"]

        def broken(batch):
            raise RuntimeError("the challenger fell over")

        challenger.model.predict_proba = broken  # a failing shadow must not reach the caller
        failing = s.client.post("/predict", json={"records": [ctr_record(50)]})
        wait_until(lambda: s.server.metrics.shadow.labels("2", "failed")._value.get() == 1)
        metrics = s.client.get("/metrics").text
    assert {(a["predictions"][0]["model_version"], a["predictions"][0]["role"]) for a in answers} == {("1", "champion")}
    assert failing.status_code == 200 and failing.json()["predictions"][0]["role"] == "champion"
    logged = read_predictions(s.log_path)
    shadow = logged[logged["role"] == "shadow"]
    assert sorted(shadow["request_id"]) == sorted(f"r{i}" for i in range(1, 21))
    assert set(shadow["model_version"]) == {"2"}
    assert 'flywheel_serving_shadow_total{outcome="ok",version="2"} 20.0' in metrics
    assert 'flywheel_serving_shadow_total{outcome="failed",version="2"} 1.0' in metrics
    assert 'flywheel_serving_shadow_abs_diff_count{version="2"} 20.0' in metrics


def test_ab_mode_uses_fixed_weights(serve_ctr):
    tags = {"flywheel.serving_mode": "ab", "flywheel.ab_weight": "100"}
    with serve_ctr(aliases={"champion": "1", "challenger": "2", "canary": "2"}, tags=tags) as s:
        answer = s.client.post("/predict", json={"records": [ctr_record(i) for i in range(1, 6)]}).json()
    assert {(p["model_version"], p["role"]) for p in answer["predictions"]} == {("2", "challenger")}


def test_v2_protocol(serve_ctr, ctr_onnx):
    record = ctr_record()
    inputs = [{"name": k, "datatype": "BYTES" if isinstance(v, str) else "FP32", "shape": [1, 1], "data": [v]}
              for k, v in record.items() if k != "ad_id"]
    with serve_ctr(aliases={"champion": "1", "canary": "2"}) as s:
        assert s.client.get("/v2/health/live").json() == {"live": True}
        assert s.client.get("/v2/health/ready").json() == {"ready": True}
        assert s.client.get("/v2/models/ctr/ready").json() == {"name": "ctr", "ready": True}
        assert s.client.get("/v2/models/ctr/versions/2/ready").status_code == 200
        meta = s.client.get("/v2/models/ctr").json()
        champion = s.client.post("/v2/models/ctr/infer", json={"id": "v2-a", "inputs": inputs}).json()
        pinned = s.client.post("/v2/models/ctr/versions/2/infer", json={"inputs": inputs}).json()
    assert meta["versions"] == ["1", "2"] and meta["platform"] == "onnxruntime_onnx"
    assert {i["name"] for i in meta["inputs"]} == set(ctr_onnx.config.feature_columns)
    assert meta["parameters"]["roles"]["canary"]["version"] == "2"
    assert champion["id"] == "v2-a" and champion["model_version"] == "1"
    assert champion["outputs"][0]["data"] == pytest.approx(list(expected_scores(ctr_onnx.files["1"], [record])))
    assert pinned["model_version"] == "2" and pinned["parameters"] == {"role": "canary"}
    assert set(read_predictions(s.log_path)["route"]) == {"/v2/models/{name}/infer"}


def test_not_ready_without_a_champion(serve_ctr):
    with serve_ctr(aliases={"challenger": "1"}) as s:
        assert s.client.get("/v2/health/live").status_code == 200
        ready = s.client.get("/v2/health/ready")
        refused = s.client.post("/predict", json={"records": [ctr_record()]})
    assert ready.status_code == 503 and ready.json()["reason"] == "no @champion loaded"
    assert refused.status_code == 503 and refused.json()["code"] == "not_ready"
    assert refused.headers["retry-after"] == "1"


def test_a_full_queue_answers_503_at_once(serve_ctr):
    with serve_ctr(max_queue_rows=2) as s:
        refused = s.client.post("/predict", json={"records": [ctr_record(i) for i in range(1, 4)]})
        fine = s.client.post("/predict", json={"records": [ctr_record(1)]})
        s.server.batcher._queued_rows = 2  # as if two rows were waiting for the session
        shed = s.client.post("/predict", content=b"not even parsed", headers={"content-type": "application/json"})
        s.server.batcher._queued_rows = 0
        metrics = s.client.get("/metrics").text
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "queue_full" and fine.status_code == 200
    assert shed.status_code == 503 and shed.json()["code"] == "queue_full"  # refused before the body was parsed
    assert 'flywheel_serving_rejected_total{reason="queue_full",route="/predict"} 2.0' in metrics


def test_hot_reload_and_a_version_that_fails_its_hash_is_refused(serve_ctr, ctr_onnx):
    with serve_ctr() as s:
        before = s.client.post("/predict", json={"records": [ctr_record()]}).json()["predictions"][0]
        s.source.aliases["champion"] = "2"
        s.server.watcher.refresh()
        after = s.client.post("/predict", json={"records": [ctr_record()]}).json()["predictions"][0]
        s.source.files["3"] = ctr_onnx.files["1"]
        s.source.hashes["3"] = "0" * 64  # the file is not what the version records
        s.source.aliases["champion"] = "3"
        s.server.watcher.refresh()
        kept = s.client.post("/predict", json={"records": [ctr_record()]}).json()["predictions"][0]
        status = s.client.get("/v2/models/ctr").json()["parameters"]
        s.server.watcher.refresh()  # not retried before retry_refused_s
        metrics = s.client.get("/metrics").text
    assert (before["model_version"], after["model_version"], kept["model_version"]) == ("1", "2", "2")
    assert before["score"] != after["score"]
    assert "refusing to load an altered file" in status["refused"]["3"]["reason"]
    assert s.source.loads == ["1", "2", "3"]
    assert 'flywheel_serving_model_load_failures_total{role="champion",version="3"} 1.0' in metrics
    assert 'flywheel_serving_model_reloads_total{role="champion"} 1.0' in metrics


def test_a_bad_routing_tag_keeps_the_routing_in_force(serve_ctr):
    with serve_ctr(aliases={"champion": "1", "canary": "2"}, tags={"flywheel.canary_weight": "100"}) as s:
        s.source.tags["flywheel.canary_weight"] = "all of it"
        s.server.watcher.refresh()
        answer = s.client.post("/predict", json={"records": [ctr_record()]}).json()
    assert answer["predictions"][0]["role"] == "canary"
    assert "flywheel.canary_weight='all of it'" in s.server.watcher.last_error


def test_metrics_cover_requests_latency_scores_queue_and_batches(serve_ctr):
    with serve_ctr() as s:
        s.client.post("/predict", json={"records": [ctr_record(1), ctr_record(2)]})
        s.client.post("/predict", content=b"{", headers={"content-type": "application/json"})
        text = s.client.get("/metrics").text
    for line in ['flywheel_serving_requests_total{code="200",role="champion",route="/predict",version="1"} 1.0',
                 'flywheel_serving_requests_total{code="400",role="none",route="/predict",version="none"} 1.0',
                 'flywheel_serving_rejected_total{reason="malformed_json",route="/predict"} 1.0',
                 'flywheel_serving_request_latency_seconds_count{role="champion",route="/predict",version="1"} 1.0',
                 'flywheel_serving_score_count{role="champion",version="1"} 2.0',
                 'flywheel_serving_batch_size_count{version="1"} 1.0',
                 'flywheel_serving_predictions_total{role="champion",version="1"} 2.0',
                 "flywheel_serving_queue_depth 0.0", "flywheel_serving_ready 1.0",
                 "flywheel_serving_prediction_log_rows_total 2.0"]:
        assert line in text, line


def test_a_failing_model_is_a_500_charged_to_its_version(serve_ctr):
    with serve_ctr(aliases={"champion": "1", "canary": "2"}, tags={"flywheel.canary_weight": "100"}) as s:
        def broken(batch):
            raise RuntimeError("canary crashed")

        s.server.watcher.current.models["canary"].model.predict_proba = broken
        failed = s.client.post("/predict", json={"records": [ctr_record()]})
        metrics = s.client.get("/metrics").text
    assert failed.status_code == 500
    assert failed.json() == {"code": "model_error", "field": None,
                             "message": "ctr v2 failed: RuntimeError: canary crashed"}
    assert 'flywheel_serving_requests_total{code="500",role="canary",route="/predict",version="2"} 1.0' in metrics
    assert 'flywheel_serving_errors_total{code="model_error",route="/predict",version="2"} 1.0' in metrics
    assert read_predictions(s.log_path).empty


def test_metrics_stay_in_process_when_something_turned_on_multiprocess_mode(tmp_path, monkeypatch):
    from prometheus_client import values

    from mlflywheel.serving.metrics import ServerMetrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # what importing Feast does
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    first, second = ServerMetrics(), ServerMetrics()
    first.requests.labels("/predict", "1", "champion", "200").inc()
    assert b'version="1"' not in second.render()
    assert list(tmp_path.iterdir()) == []


def test_a_refused_canary_gets_no_traffic_and_a_registry_outage_keeps_serving(serve_ctr, ctr_onnx):
    with serve_ctr(tags={"flywheel.canary_weight": "100"}) as s:
        s.source.files["3"] = ctr_onnx.files["2"]
        s.source.hashes["3"] = "f" * 64
        s.source.aliases["canary"] = "3"
        s.server.watcher.refresh()
        answer = s.client.post("/predict", json={"records": [ctr_record(i) for i in range(1, 11)]}).json()

        def down():
            raise ConnectionError("registry unreachable")

        s.source.state = down
        s.server.watcher.refresh()
        during_outage = s.client.post("/predict", json={"records": [ctr_record()]})
        ready = s.client.get("/v2/health/ready")
    assert {p["role"] for p in answer["predictions"]} == {"champion"}
    assert during_outage.status_code == 200 and ready.status_code == 200
    assert s.server.watcher.last_error == "registry poll failed: registry unreachable"


def test_generated_request_ids_are_unique_32_hex_and_differ_between_servers():
    from mlflywheel.serving.app import _RequestIds

    first, second = _RequestIds(), _RequestIds()
    ids = [first() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert second()[:20] != ids[0][:20]
