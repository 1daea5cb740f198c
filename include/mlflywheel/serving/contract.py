"""Strict request parsing: every bad input becomes a 4xx with ``{code, field, message}``.

The contract comes from the pipeline itself: the entity column, the request-time features
(or, with the Feast lookup off, every model input), string vs number from the training
config, and ranges and integer types from the dataset's expectation suite, so the server
accepts what training accepted and nothing else. JSON is parsed strictly: ``NaN`` and
``Infinity`` literals, numbers that overflow to infinity and duplicate keys are refused, and
``"1.5"`` or ``true`` is not a number.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig

MAX_STRING = 256
FLOAT32_MAX = 3.4028234663852886e38
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_decode = msgspec.json.Decoder().decode


class RequestError(Exception):
    """A request the server refuses, with the HTTP status and the JSON body to send."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field, self.message = status, code, field, message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class FieldSpec:
    """One accepted field: its kind (``string``, ``number`` or ``integer``), nullability and range."""

    name: str
    kind: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Contract:
    """What a ``/predict`` record and a v2 ``infer`` input may contain."""

    entity: FieldSpec
    record_fields: dict[str, FieldSpec]
    optional: frozenset[str]
    input_fields: dict[str, FieldSpec]
    max_rows: int
    id_column: str | None = None
    string_inputs: frozenset[str] = field(default_factory=frozenset)

    @cached_property
    def allowed(self) -> frozenset[str]:
        """Every key a ``/predict`` record may have."""
        return frozenset((self.entity.name, *self.record_fields))

    @cached_property
    def required(self) -> frozenset[str]:
        """The keys every ``/predict`` record must have."""
        return frozenset((self.entity.name, *(n for n in self.record_fields if n not in self.optional)))


def _suite_facts(suite: Mapping[str, Any] | None) -> tuple[dict[str, tuple[Any, Any]], dict[str, str]]:
    ranges: dict[str, tuple[Any, Any]] = {}
    types: dict[str, str] = {}
    for exp in (suite or {}).get("expectations", []):
        kwargs = exp.get("kwargs", {})
        if exp.get("type") == "expect_column_values_to_be_between" and "column" in kwargs:
            ranges[kwargs["column"]] = (kwargs.get("min_value"), kwargs.get("max_value"))
        elif exp.get("type") == "expect_column_values_to_be_of_type" and "column" in kwargs:
            types[kwargs["column"]] = str(kwargs.get("type_"))
    return ranges, types


def build_contract(config: PipelineConfig, suite: Mapping[str, Any] | None, *, feast_lookup: bool,
                   max_rows: int) -> Contract:
    """The request contract of a pipeline.

    Args:
        config: the pipeline (entity, request features, model inputs).
        suite: its expectation suite (ranges and integer types); ``None`` means no ranges.
        feast_lookup: with the lookup on, a record carries the request-time features and the
            store adds the rest; off, it carries every model input (view features may be null).
        max_rows: records per request (more is a 413).
    """
    ranges, types = _suite_facts(suite)
    strings = set(config.training.categorical)

    def spec(name: str, nullable: bool) -> FieldSpec:
        if name in strings:
            return FieldSpec(name, "string", nullable)
        low, high = ranges.get(name, (None, None))
        kind = "integer" if types.get(name, "").startswith("int") else "number"
        return FieldSpec(name, kind, nullable, low, high)

    request = list(config.features.request_features)
    inputs = config.feature_columns
    view_outputs = [c for c in inputs if c not in request]
    entity = spec(config.data.entity, False)
    if feast_lookup:
        record = {name: spec(name, False) for name in request if name in inputs}
    else:
        record = {**{name: spec(name, False) for name in request if name in inputs},
                  **{name: spec(name, True) for name in view_outputs}}
    optional = {config.data.id_column}
    record[config.data.id_column] = FieldSpec(config.data.id_column, "string", True)
    input_fields = {name: spec(name, name not in request) for name in inputs}
    return Contract(entity=entity, record_fields=record, optional=frozenset(optional),
                    input_fields=input_fields, max_rows=max_rows, id_column=config.data.id_column,
                    string_inputs=frozenset(strings))


# --- JSON ------------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use null for a missing value)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RequestError(400, "duplicate_key", f"key {key!r} appears more than once in one object", key)
        out[key] = value
    return out


def parse_json(body: bytes) -> Any:
    """Parse ``body`` strictly; errors say where (line, column, character offset).

    The fast path is msgspec (about 5x the standard library on a 32-row body), which refuses
    everything the strict parser refuses and more (lone surrogates, numbers beyond float64);
    whatever it refuses goes through the strict parser, which accepts or says why. msgspec
    keeps the last of duplicate keys silently, so the fast path also checks that the body has
    no more ``:`` than the parsed objects have keys: every key has one ``:`` after it, so
    equal counts mean no key was dropped. A body with ``:`` inside strings goes through the
    strict parser too.
    """
    try:
        value = _decode(body)
    except (ValueError, RecursionError):  # msgspec's errors, invalid UTF-8, nesting: the strict parser decides
        return _parse_strict(body)
    if body.count(b":") != _keys(value):
        return _parse_strict(body)
    return value


def _keys(value: Any) -> int:
    """How many keys the objects in ``value`` have, nested ones included (C-level passes over
    containers that hold no containers, the usual case)."""
    kind = type(value)
    if kind is dict:
        count, items = len(value), value.values()
    elif kind is list:
        count, items = 0, value
    else:
        return 0
    if _CONTAINERS.isdisjoint(map(type, items)):
        return count
    return count + sum(_keys(v) for v in items if type(v) in _CONTAINERS)


_CONTAINERS = frozenset((dict, list))


def _parse_strict(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, "malformed_json", f"body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise RequestError(400, "malformed_json", f"{exc.msg} at line {exc.lineno} column {exc.colno} "
                                                  f"(char {exc.pos})") from None
    except ValueError as exc:  # NaN / Infinity literals
        raise RequestError(400, "malformed_json", str(exc)) from None
    except RecursionError:
        raise RequestError(400, "malformed_json", "JSON nested too deeply") from None


def check_request_id(value: str | None) -> str | None:
    """A client-supplied request id (``X-Request-ID``) or ``None``; a malformed one is a 400."""
    if value is None:
        return None
    if not REQUEST_ID.match(value):
        raise RequestError(400, "invalid_request_id", "X-Request-ID must be 1-128 characters of "
                                                      "A-Z a-z 0-9 . _ : -", "X-Request-ID")
    return value


# --- values ----------------------------------------------------------------------------
def _plainly_valid(value: Any, spec: FieldSpec) -> bool:
    """The common case in a few comparisons (a 32-row request has 300 values); anything
    else goes through the full checks, which also build the error."""
    kind = type(value)
    if spec.kind == "string":
        return kind is str and 0 < len(value) <= MAX_STRING
    if kind is int:
        number = float(value) if abs(value) <= FLOAT32_MAX else math.inf
    elif kind is float and spec.kind == "number":
        number = value
    else:
        return False
    return (-FLOAT32_MAX <= number <= FLOAT32_MAX and (spec.min is None or number >= spec.min)
            and (spec.max is None or number <= spec.max))


def check_value(value: Any, spec: FieldSpec, where: str) -> Any:
    """``value`` as the model will see it, or a 422 naming ``where``."""
    if _plainly_valid(value, spec):
        return value
    if value is None:
        if spec.nullable:
            return None
        raise RequestError(422, "null_value", f"{spec.name} must not be null", where)
    if spec.kind == "string":
        if not isinstance(value, str):
            raise RequestError(422, "invalid_type", f"{spec.name} must be a string, found "
                                                    f"{type(value).__name__}", where)
        if not value or len(value) > MAX_STRING:
            raise RequestError(422, "out_of_range", f"{spec.name} must have 1-{MAX_STRING} characters", where)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(422, "invalid_type", f"{spec.name} must be a {spec.kind}, found "
                                                f"{type(value).__name__} {json.dumps(value)[:40]}", where)
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(422, "not_finite", f"{spec.name} overflows to infinity", where)
    if spec.kind == "integer" and isinstance(value, float) and not value.is_integer():
        raise RequestError(422, "invalid_type", f"{spec.name} must be an integer, found {value!r}", where)
    if abs(value) > FLOAT32_MAX:
        raise RequestError(422, "out_of_range", f"{spec.name}={value!r} is beyond float32", where)
    if spec.min is not None and value < spec.min:
        raise RequestError(422, "out_of_range", f"{spec.name}={value!r} is below the minimum {spec.min}", where)
    if spec.max is not None and value > spec.max:
        raise RequestError(422, "out_of_range", f"{spec.name}={value!r} is above the maximum {spec.max}", where)
    return value


# --- /predict --------------------------------------------------------------------------
@dataclass
class PredictRequest:
    """Validated ``/predict`` records: entity ids and request-time features, row by row."""

    entity_ids: list[int | str]
    records: list[dict[str, Any]]
    ids: list[str | None]


def parse_predict(body: bytes, contract: Contract) -> PredictRequest:
    """``{"records": [{<entity>: id, <feature>: value, ...}, ...]}``, checked field by field."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise RequestError(422, "invalid_type", f"body must be a JSON object, found {type(payload).__name__}")
    unknown = sorted(set(payload) - {"records"})
    if unknown:
        raise RequestError(422, "unknown_field", f"unknown top-level key {unknown[0]!r}; expected 'records'",
                           unknown[0])
    records = payload.get("records")
    if records is None:
        raise RequestError(422, "missing_field", "body needs 'records': a list of objects", "records")
    if not isinstance(records, list):
        raise RequestError(422, "invalid_type", f"records must be a list, found {type(records).__name__}", "records")
    if not records:
        raise RequestError(422, "empty", "records is empty", "records")
    if len(records) > contract.max_rows:
        raise RequestError(413, "too_many_rows", f"{len(records)} records; at most {contract.max_rows} per request",
                           "records")
    fast = _records_fast(records, contract)
    if fast is not None:
        return fast
    entity = contract.entity
    fields = contract.record_fields
    required = [n for n in fields if n not in contract.optional]
    out = PredictRequest([], [], [])
    for i, record in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(record, dict):
            raise RequestError(422, "invalid_type", f"{where} must be an object, found {type(record).__name__}", where)
        if entity.name not in record:
            raise RequestError(422, "missing_field", f"{where} lacks the entity id {entity.name!r}",
                               f"{where}.{entity.name}")
        for name in record:
            if name != entity.name and name not in fields:
                raise RequestError(422, "unknown_field", f"{name!r} is not an input of this model; expected "
                                                         f"{sorted([entity.name, *fields])}", f"{where}.{name}")
        for name in required:
            if name not in record:
                raise RequestError(422, "missing_field", f"{where} lacks {name!r}", f"{where}.{name}")
        entity_id = check_value(record[entity.name], entity, f"{where}.{entity.name}")
        features = {name: check_value(record[name], spec, f"{where}.{name}")
                    for name, spec in fields.items() if name in record and name != contract.id_column}
        out.entity_ids.append(entity_id)
        out.records.append(features)
        out.ids.append(check_value(record.get(contract.id_column), fields[contract.id_column],
                                   f"{where}.{contract.id_column}") if contract.id_column else None)
    return out


def _records_fast(records: list[Any], contract: Contract) -> PredictRequest | None:
    """The records checked a column at a time in C-level passes (type sets, min/max), the
    answer :func:`parse_predict`'s row-by-row check gives for valid records at a tenth of its
    cost; ``None`` when anything is off, and the row-by-row check then finds and names it."""
    allowed, required = contract.allowed, contract.required
    for record in records:
        if type(record) is not dict or not (required <= record.keys() <= allowed):
            return None
    entity = contract.entity.name
    entity_ids = [r[entity] for r in records]
    if not _column_ok(entity_ids, contract.entity):
        return None
    id_column = contract.id_column
    for name, spec in contract.record_fields.items():
        if name == id_column:
            continue
        if not _column_ok([r[name] for r in records if name in r], spec):  # required keys are in every record
            return None
    ids: list[Any] = [None] * len(records)
    if id_column:
        ids = [r.get(id_column) for r in records]
        if not _column_ok(ids, contract.record_fields[id_column]):
            return None
    features = []
    for record in records:
        row = dict(record)
        del row[entity]
        if id_column:
            row.pop(id_column, None)
        features.append(row)
    return PredictRequest(entity_ids, features, ids)


_NUMBERS, _INTEGERS, _STRINGS = frozenset((int, float)), frozenset((int,)), frozenset((str,))


def _column_ok(values: list[Any], spec: FieldSpec) -> bool:
    """Whether every value passes :func:`check_value` unchanged (``False`` also for the rare
    valid values this does not vouch for, such as ``3.0`` for an integer)."""
    kinds = set(map(type, values))
    if spec.nullable and type(None) in kinds:
        kinds.discard(type(None))
        values = [v for v in values if v is not None]
    if not values:
        return True
    if spec.kind == "string":
        return kinds <= _STRINGS and min(map(len, values)) > 0 and max(map(len, values)) <= MAX_STRING
    if not kinds <= (_INTEGERS if spec.kind == "integer" else _NUMBERS):
        return False
    low, high = min(values), max(values)
    return (low >= -FLOAT32_MAX and high <= FLOAT32_MAX and (spec.min is None or low >= spec.min)
            and (spec.max is None or high <= spec.max))


# --- Open Inference Protocol v2 ---------------------------------------------------------
NUMERIC_TYPES = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64",
                           "UINT8", "UINT16", "UINT32", "UINT64"})


@dataclass
class InferRequest:
    """A validated v2 ``infer`` body as rows of model inputs."""

    id: str | None
    records: list[dict[str, Any]]


def parse_infer(body: bytes, contract: Contract) -> InferRequest:
    """``{"id"?, "inputs": [{"name", "shape", "datatype", "data"}, ...]}``: one input per model column."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise RequestError(422, "invalid_type", f"body must be a JSON object, found {type(payload).__name__}")
    unknown = sorted(set(payload) - {"id", "inputs", "outputs", "parameters"})
    if unknown:
        raise RequestError(422, "unknown_field", f"unknown top-level key {unknown[0]!r}", unknown[0])
    request_id = payload.get("id")
    if request_id is not None and (not isinstance(request_id, str) or not REQUEST_ID.match(request_id)):
        raise RequestError(422, "invalid_type", "id must be 1-128 characters of A-Z a-z 0-9 . _ : -", "id")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(422, "missing_field" if inputs is None else "invalid_type",
                           "inputs must be a non-empty list of tensors", "inputs")
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise RequestError(422, "invalid_type", f"{where} must be an object", where)
        extra = sorted(set(tensor) - {"name", "shape", "datatype", "data", "parameters"})
        if extra:
            raise RequestError(422, "unknown_field", f"unknown key {extra[0]!r} in {where}", f"{where}.{extra[0]}")
        name = tensor.get("name")
        if name not in contract.input_fields:
            raise RequestError(422, "unknown_field", f"{name!r} is not an input of this model; expected "
                                                     f"{sorted(contract.input_fields)}", f"{where}.name")
        if name in columns:
            raise RequestError(422, "duplicate_input", f"input {name!r} given twice", f"{where}.name")
        spec = contract.input_fields[name]
        datatype = tensor.get("datatype")
        expected = "BYTES" if spec.kind == "string" else "a numeric datatype"
        if ((spec.kind == "string") != (datatype == "BYTES")
                or (spec.kind != "string" and datatype not in NUMERIC_TYPES)):
            raise RequestError(422, "invalid_type", f"input {name!r}: datatype must be {expected}, found {datatype!r}",
                               f"{where}.datatype")
        shape = tensor.get("shape")
        if (not isinstance(shape, list) or not shape or len(shape) > 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
                or (len(shape) == 2 and shape[1] != 1)):
            raise RequestError(422, "invalid_shape", f"input {name!r}: shape must be [N] or [N, 1], found {shape!r}",
                               f"{where}.shape")
        data = tensor.get("data")
        if not isinstance(data, list):
            raise RequestError(422, "invalid_type", f"input {name!r}: data must be a flat list", f"{where}.data")
        if len(data) != shape[0]:
            raise RequestError(422, "invalid_shape", f"input {name!r}: shape says {shape[0]} values, data has "
                                                     f"{len(data)}", f"{where}.data")
        if len(data) > contract.max_rows:
            raise RequestError(413, "too_many_rows", f"{len(data)} rows; at most {contract.max_rows} per request",
                               f"{where}.data")
        if rows is not None and len(data) != rows:
            raise RequestError(422, "invalid_shape", f"input {name!r} has {len(data)} rows, earlier inputs {rows}",
                               f"{where}.data")
        rows = len(data)
        columns[name] = [check_value(v, spec, f"{where}.data[{j}]") for j, v in enumerate(data)]
    missing = sorted(set(contract.input_fields) - set(columns))
    if missing:
        raise RequestError(422, "missing_field", f"inputs lack {missing}", f"inputs.{missing[0]}")
    assert rows is not None
    records = [{name: values[j] for name, values in columns.items()} for j in range(rows)]
    return InferRequest(request_id, records)
