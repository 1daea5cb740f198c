"""Benchmark mechanics and the SLA gate (behaviour, never wall-clock assertions)."""

from __future__ import annotations

import pandas as pd
import pytest

from mlflywheel.services.config import SlaSpec
from mlflywheel.services.errors import GateMisconfigured
from mlflywheel.stages.benchmark import (
    Measurement,
    benchmark_version,
    chart,
    measure,
    run,
    sla_failures,
)

pytestmark = pytest.mark.unit


def _m(variant, batch, p99, rps):
    return Measurement(variant, batch, 100, p99 / 2, p99, p99, rps)


def test_measure_sees_the_requested_batch_size_and_counts_calls():
    sizes = []
    frame = pd.DataFrame({"x": range(10)})
    result = measure("v", lambda b: sizes.append(len(b)), frame, 25, min_calls=40, min_seconds=0, warmup=2)
    assert result.calls == 40 and set(sizes) == {25}
    assert result.p50_ms <= result.p95_ms <= result.p99_ms
    assert [m.batch_size for m in run({"a": len, "b": len}, frame, [1, 4], single_row_seconds=0.01,
                                      batch_seconds=0.01)] == [1, 1, 4, 4]


def test_rounds_take_turns_and_add_up():
    import itertools

    order = []
    variants = {name: (lambda b, name=name: order.append(name)) for name in ("a", "b")}
    results = run(variants, pd.DataFrame({"x": range(10)}), [4], batch_seconds=0, rounds=3, warmup=1)
    assert order[:2] == ["a", "b"]  # warm-up
    assert [name for name, _ in itertools.groupby(order[2:])] == ["a", "b"] * 3
    assert [(m.variant, m.calls) for m in results] == [("a", 30), ("b", 30)]
    with pytest.raises(ValueError, match="rounds must be at least 1, got 0"):
        run(variants, pd.DataFrame({"x": range(3)}), [4], rounds=0)


@pytest.mark.parametrize(("results", "expected"), [
    ([_m("v", 1, 5.0, 200), _m("v", 1024, 30.0, 60_000)], []),
    ([_m("v", 1, 12.0, 80), _m("v", 1024, 30.0, 60_000)], ["single-row p99 12.000 ms > 10.0 ms"]),
    ([_m("v", 1, 5.0, 200), _m("v", 1024, 30.0, 9_000)], ["throughput at batch 1024: 9,000 rows/s < 50,000"]),
    ([_m("v", 1024, 30.0, 60_000)], ["single-row latency was not measured"]),
])
def test_sla_failures(results, expected):
    assert sla_failures(results, "v", SlaSpec(single_row_p99_ms=10, min_rows_per_s={1024: 50_000})) == expected


def test_no_sla_fails_closed(pipeline_config, tmp_path):
    from mlflywheel.services.settings import Workspace

    config = pipeline_config("fraud")
    config = config.model_copy(update={"benchmark": config.benchmark.model_copy(update={"sla": None})})
    with pytest.raises(GateMisconfigured, match="benchmark.sla is not configured"):
        benchmark_version(config, Workspace(home=tmp_path), version="1")


def test_chart_is_a_png(tmp_path):
    path = chart([_m("a", 1, 1.0, 1000), _m("a", 32, 2.0, 16000), _m("b", 1, 0.1, 10000), _m("b", 32, 0.2, 160000)],
                 tmp_path / "c.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
