"""Bad input gets a clear 4xx with ``{code, field, message}``, is counted, and is never logged."""

from __future__ import annotations

import json
import sqlite3

import pytest

from mlflywheel.serving.contract import parse_json
from tests import helpers
from tests.helpers import ctr_record

pytestmark = pytest.mark.unit
JSON = {"content-type": "application/json"}
MAX_BODY = 4096
MAX_ROWS = 8


def body(*records: dict, **top: object) -> bytes:
    return json.dumps({"records": list(records), **top}).encode()


def one(**changes: object) -> bytes:
    return body(ctr_record(**changes))


def without(name: str) -> bytes:
    record = ctr_record()
    del record[name]
    return body(record)


def tensors(**changes: object) -> list[dict]:
    """v2 inputs for one row of the CTR model; ``changes`` replaces whole tensors (None drops one)."""
    record = {k: v for k, v in ctr_record().items() if k != "ad_id"}
    out = {k: {"name": k, "datatype": "BYTES" if isinstance(v, str) else "FP32", "shape": [1], "data": [v]}
           for k, v in record.items()}
    for name, tensor in changes.items():
        if tensor is None:
            out.pop(name)
        else:
            out[name] = tensor
    return list(out.values())


def infer(*inputs: dict, **top: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **top}).encode()


P, V2 = "/predict", "/v2/models/ctr/infer"
# (case id, method, path, body, headers, status, code, field)
CASES = [
    # malformed JSON: 400 with the position
    ("truncated-object", "POST", P, b'{"records": [', JSON, 400, "malformed_json", None),
    ("empty-body", "POST", P, b"", JSON, 400, "malformed_json", None),
    ("trailing-garbage", "POST", P, body(ctr_record()) + b" x", JSON, 400, "malformed_json", None),
    ("single-quotes", "POST", P, b"{'records': []}", JSON, 400, "malformed_json", None),
    ("trailing-comma", "POST", P, b'{"records": [1,]}', JSON, 400, "malformed_json", None),
    ("nan-literal", "POST", P, one().replace(b'"bid_price": 1.5', b'"bid_price": NaN'), JSON, 400,
     "malformed_json", None),
    ("infinity-literal", "POST", P, one().replace(b'"bid_price": 1.5', b'"bid_price": Infinity'), JSON, 400,
     "malformed_json", None),
    ("minus-infinity", "POST", P, one().replace(b'"bid_price": 1.5', b'"bid_price": -Infinity'), JSON, 400,
     "malformed_json", None),
    ("duplicate-top-key", "POST", P, b'{"records": [], "records": []}', JSON, 400, "duplicate_key", "records"),
    ("duplicate-record-key", "POST", P, one().replace(b'"ad_id": 7', b'"ad_id": 7, "ad_id": 8'), JSON, 400,
     "duplicate_key", "ad_id"),
    # a ':' inside a string sends the body through the strict parser, which still finds the duplicate
    ("duplicate-key-colon-in-string", "POST", P, one(placement="a:b").replace(b'"ad_id": 7', b'"ad_id": 7, "ad_id": 8'),
     JSON, 400, "duplicate_key", "ad_id"),
    ("duplicate-nested-key", "POST", P, b'{"records": [{"ad_id": 7, "x": {"k": 1, "k": 2}}]}', JSON, 400,
     "duplicate_key", "k"),
    ("not-utf8", "POST", P, b'{"records": ["\xff\xfe"]}', JSON, 400, "malformed_json", None),
    ("nested-too-deep", "POST", P, b"[" * 2000 + b"]" * 2000, JSON, 400, "malformed_json", None),
    ("bad-request-id", "POST", P, one(), {**JSON, "x-request-id": "no spaces allowed"}, 400, "invalid_request_id",
     "X-Request-ID"),
    # content type and size
    ("text-plain", "POST", P, one(), {"content-type": "text/plain"}, 415, "unsupported_media_type", "Content-Type"),
    ("no-content-type", "POST", P, one(), {}, 415, "unsupported_media_type", "Content-Type"),
    ("form-encoded", "POST", P, b"records=1", {"content-type": "application/x-www-form-urlencoded"}, 415,
     "unsupported_media_type", "Content-Type"),
    ("infer-text-plain", "POST", V2, infer(*tensors()), {"content-type": "text/plain"}, 415,
     "unsupported_media_type", "Content-Type"),
    ("body-over-limit", "POST", P, b'{"records": [' + b" " * MAX_BODY + b"]}", JSON, 413, "payload_too_large", None),
    ("too-many-rows", "POST", P, body(*[ctr_record(i + 1) for i in range(MAX_ROWS + 1)]), JSON, 413,
     "too_many_rows", "records"),
    ("infer-too-many-rows", "POST", V2, infer(*[{**t, "shape": [MAX_ROWS + 1], "data": t["data"] * (MAX_ROWS + 1)}
                                               for t in tensors()]), JSON, 413, "too_many_rows", "inputs[0].data"),
    # structure
    ("top-level-list", "POST", P, b"[1, 2]", JSON, 422, "invalid_type", None),
    ("top-level-string", "POST", P, b'"records"', JSON, 422, "invalid_type", None),
    ("top-level-null", "POST", P, b"null", JSON, 422, "invalid_type", None),
    ("no-records", "POST", P, b"{}", JSON, 422, "missing_field", "records"),
    ("records-object", "POST", P, b'{"records": {}}', JSON, 422, "invalid_type", "records"),
    ("records-empty", "POST", P, b'{"records": []}', JSON, 422, "empty", "records"),
    ("record-not-object", "POST", P, b'{"records": [1]}', JSON, 422, "invalid_type", "records[0]"),
    ("unknown-top-key", "POST", P, body(ctr_record(), extra=1), JSON, 422, "unknown_field", "extra"),
    # missing and unknown fields
    ("missing-entity", "POST", P, without("ad_id"), JSON, 422, "missing_field", "records[0].ad_id"),
    ("missing-request-feature", "POST", P, without("placement"), JSON, 422, "missing_field", "records[0].placement"),
    ("missing-store-feature", "POST", P, without("clicked_count_7d"), JSON, 422, "missing_field",
     "records[0].clicked_count_7d"),
    ("unknown-field", "POST", P, one(colour="red"), JSON, 422, "unknown_field", "records[0].colour"),
    ("label-is-not-an-input", "POST", P, one(clicked=1), JSON, 422, "unknown_field", "records[0].clicked"),
    ("sensitive-attribute", "POST", P, one(user_age_band="18-25"), JSON, 422, "unknown_field",
     "records[0].user_age_band"),
    # wrong types
    ("float-as-string", "POST", P, one(bid_price="1.5"), JSON, 422, "invalid_type", "records[0].bid_price"),
    ("float-as-true", "POST", P, one(bid_price=True), JSON, 422, "invalid_type", "records[0].bid_price"),
    ("float-as-false", "POST", P, one(bid_price=False), JSON, 422, "invalid_type", "records[0].bid_price"),
    ("float-as-list", "POST", P, one(bid_price=[1.5]), JSON, 422, "invalid_type", "records[0].bid_price"),
    ("float-as-object", "POST", P, one(bid_price={"v": 1.5}), JSON, 422, "invalid_type", "records[0].bid_price"),
    ("int-as-string", "POST", P, one(position="2"), JSON, 422, "invalid_type", "records[0].position"),
    ("int-as-fraction", "POST", P, one(position=2.5), JSON, 422, "invalid_type", "records[0].position"),
    ("entity-as-string", "POST", P, one(ad_id="7"), JSON, 422, "invalid_type", "records[0].ad_id"),
    ("entity-as-bool", "POST", P, one(ad_id=True), JSON, 422, "invalid_type", "records[0].ad_id"),
    ("entity-as-fraction", "POST", P, one(ad_id=7.5), JSON, 422, "invalid_type", "records[0].ad_id"),
    ("category-as-number", "POST", P, one(placement=3), JSON, 422, "invalid_type", "records[0].placement"),
    ("category-as-list", "POST", P, one(device=["ios"]), JSON, 422, "invalid_type", "records[0].device"),
    ("store-feature-as-string", "POST", P, one(clicked_mean_7d="0.1"), JSON, 422, "invalid_type",
     "records[0].clicked_mean_7d"),
    ("record-id-as-number", "POST", P, one(impression_id=5), JSON, 422, "invalid_type", "records[0].impression_id"),
    ("second-record-bad", "POST", P, body(ctr_record(1), ctr_record(2, bid_price="x")), JSON, 422, "invalid_type",
     "records[1].bid_price"),
    # nulls and ranges (ranges from the expectation suite)
    ("null-request-feature", "POST", P, one(bid_price=None), JSON, 422, "null_value", "records[0].bid_price"),
    ("null-entity", "POST", P, one(ad_id=None), JSON, 422, "null_value", "records[0].ad_id"),
    ("null-category", "POST", P, one(placement=None), JSON, 422, "null_value", "records[0].placement"),
    ("below-minimum", "POST", P, one(bid_price=-0.01), JSON, 422, "out_of_range", "records[0].bid_price"),
    ("above-maximum", "POST", P, one(bid_price=100.5), JSON, 422, "out_of_range", "records[0].bid_price"),
    ("int-above-maximum", "POST", P, one(position=11), JSON, 422, "out_of_range", "records[0].position"),
    ("int-below-minimum", "POST", P, one(position=0), JSON, 422, "out_of_range", "records[0].position"),
    ("entity-below-minimum", "POST", P, one(ad_id=0), JSON, 422, "out_of_range", "records[0].ad_id"),
    ("overflow-to-infinity", "POST", P, one().replace(b'"bid_price": 1.5', b'"bid_price": 1e999'), JSON, 422,
     "not_finite", "records[0].bid_price"),
    ("beyond-float32", "POST", P, one(clicked_count_7d=1e39), JSON, 422, "out_of_range", "records[0].clicked_count_7d"),
    ("empty-category", "POST", P, one(placement=""), JSON, 422, "out_of_range", "records[0].placement"),
    ("huge-category", "POST", P, one(placement="x" * 300), JSON, 422, "out_of_range", "records[0].placement"),
    # v2 infer
    ("infer-unknown-model", "POST", "/v2/models/nope/infer", infer(*tensors()), JSON, 404, "unknown_model", "name"),
    ("infer-unknown-version", "POST", "/v2/models/ctr/versions/99/infer", infer(*tensors()), JSON, 404,
     "unknown_version", "version"),
    ("infer-empty-version", "POST", "/v2/models/ctr/versions//infer", infer(*tensors()), JSON, 404, "not_found",
     None),
    ("infer-extra-segment", "POST", "/v2/models/ctr/x/infer", infer(*tensors()), JSON, 404, "not_found", None),
    ("metadata-unknown-model", "GET", "/v2/models/nope", None, {}, 404, "unknown_model", "name"),
    ("ready-unknown-model", "GET", "/v2/models/nope/ready", None, {}, 404, "unknown_model", "name"),
    ("infer-no-inputs", "POST", V2, b'{"id": "a"}', JSON, 422, "missing_field", "inputs"),
    ("infer-inputs-not-list", "POST", V2, b'{"inputs": {}}', JSON, 422, "invalid_type", "inputs"),
    ("infer-unknown-input", "POST", V2, infer(*tensors(), {"name": "colour", "datatype": "BYTES", "shape": [1],
                                                         "data": ["red"]}), JSON, 422,
     "unknown_field", "inputs[8].name"),
    ("infer-missing-input", "POST", V2, infer(*tensors(position=None)), JSON, 422, "missing_field", "inputs.position"),
    ("infer-bytes-for-number", "POST", V2, infer(*tensors(position={"name": "position", "datatype": "BYTES",
                                                                   "shape": [1], "data": ["2"]})), JSON, 422,
     "invalid_type", "inputs[2].datatype"),
    ("infer-string-in-fp32", "POST", V2, infer(*tensors(position={"name": "position", "datatype": "FP32",
                                                                 "shape": [1], "data": ["2"]})), JSON, 422,
     "invalid_type", "inputs[2].data[0]"),
    ("infer-shape-mismatch", "POST", V2, infer(*tensors(position={"name": "position", "datatype": "FP32",
                                                                 "shape": [2], "data": [2]})), JSON, 422,
     "invalid_shape", "inputs[2].data"),
    ("infer-bad-shape", "POST", V2, infer(*tensors(position={"name": "position", "datatype": "FP32",
                                                            "shape": [1, 3], "data": [2]})), JSON, 422,
     "invalid_shape", "inputs[2].shape"),
    ("infer-rows-differ", "POST", V2, infer(*tensors(position={"name": "position", "datatype": "FP32",
                                                              "shape": [2], "data": [2, 3]})), JSON, 422,
     "invalid_shape", "inputs[2].data"),
    ("infer-bad-id", "POST", V2, infer(*tensors(), id="a b"), JSON, 422, "invalid_type", "id"),
    # routes
    ("unknown-route", "GET", "/nope", None, {}, 404, "not_found", None),
    ("wrong-method", "GET", P, None, {}, 405, "method_not_allowed", None),
]


@pytest.fixture(scope="module")
def server(ctr_onnx, tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "predictions.db"
    with helpers.running_server(ctr_onnx, path, max_body_bytes=MAX_BODY, max_rows=MAX_ROWS) as running:
        yield running


def rejected_total(server) -> float:
    return sum(s.value for m in server.server.metrics.rejected.collect() for s in m.samples
               if s.name.endswith("_total"))


def logged_rows(server) -> int:
    with sqlite3.connect(server.log_path) as conn:
        return conn.execute("SELECT count(*) FROM predictions").fetchone()[0]


def test_there_are_at_least_fifty_cases():
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("method", "path", "payload", "headers", "status", "code", "field"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_4xx(server, method, path, payload, headers, status, code, field):
    before_rejected, before_logged = rejected_total(server), logged_rows(server)
    response = server.client.request(method, path, content=payload, headers=headers)
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"code", "field", "message"} and answer["message"]
    assert (answer["code"], answer["field"]) == (code, field)
    assert rejected_total(server) == before_rejected + 1
    assert logged_rows(server) == before_logged
    # the server is still fine afterwards
    assert server.client.post(P, content=one(), headers=JSON).status_code == 200


@pytest.mark.parametrize("text", [
    '{"records": [{"a": 1, "b": "x"}, {"a": 2.5e3, "b": null}]}',
    '{"records": [{"id": "12:30", "b": true}]}',  # ':' in a string: the strict parser answers
    '{"a": {"b": {"c": [1, 2, {"d": "\\u00e9\\""}]}}, "e": []}',
    '[{"k": 123456789012345678901234567890}]',  # beyond int64: msgspec refuses, the strict parser accepts
    '{"s": "\\ud800"}',  # a lone surrogate: the same
])
def test_the_fast_json_path_agrees_with_the_strict_parser(text):
    assert parse_json(text.encode()) == json.loads(text)


def test_parse_errors_name_the_position(server):
    answer = server.client.post(P, content=b'{\n  "records": [1,]\n}', headers=JSON).json()
    assert "line 2 column 17 (char 18)" in answer["message"]


def test_the_column_wise_check_agrees_with_the_row_by_row_one(server, monkeypatch):
    """Valid records take the fast path with the same answer; anything off goes row by row."""
    from mlflywheel.serving import contract as c

    contract = server.server.contract
    records = [ctr_record(ad_id=i + 1, position=i % 5 + 1, bid_price_mean_7d=None if i % 2 else 0.5)
               for i in range(MAX_ROWS)]
    records[3]["impression_id"] = "imp-3"
    fast = c.parse_predict(body(*records), contract)
    monkeypatch.setattr(c, "_records_fast", lambda records, contract: None)
    slow = c.parse_predict(body(*records), contract)
    assert (fast.entity_ids, fast.ids) == (slow.entity_ids, slow.ids) and fast.ids[3] == "imp-3"
    assert fast.records == slow.records and fast.records[1]["bid_price_mean_7d"] is None
    monkeypatch.undo()
    assert c._records_fast(records, contract) is not None
    kinds = {name: spec.kind for name, spec in contract.record_fields.items()}
    assert kinds["position"] == "integer" and kinds["placement"] == "string"
    for bad in (ctr_record(position=True), ctr_record(position=2.0), ctr_record(placement=""),
                ctr_record(bid_price=1e39), ctr_record(bid_price=None), {**ctr_record(), "extra": 1},
                ctr_record(impression_id=5)):
        assert c._records_fast([ctr_record(), bad], contract) is None, bad
