"""Latency and throughput of model variants, measured the same way for each.

Single-row latency is timed call by call (``perf_counter_ns``) after a warm-up, with
enough calls that p99 rests on dozens of samples; throughput runs a batch repeatedly for a
minimum wall time. Every variant sees the same rows, so native and ONNX are comparable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from mlflywheel.services.names import TAG_DIGEST, TAG_SERVE_VARIANT, tag_value

if TYPE_CHECKING:
    import pandas as pd

Scorer = Callable[["pd.DataFrame"], Any]
BATCH_SIZES = (1, 32, 1024, 65536)


@dataclass
class Measurement:
    variant: str
    batch_size: int
    calls: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rows_per_s: float


def _rows(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` rows of ``frame`` (repeated when it is shorter), with a fresh index."""
    import numpy as np

    take = np.resize(np.arange(len(frame)), n)
    return frame.iloc[take].reset_index(drop=True)


def _batches(frame: pd.DataFrame, batch_size: int, count: int) -> list[pd.DataFrame]:
    return [_rows(frame.iloc[i * batch_size % len(frame):], batch_size) for i in range(count)]


class _CallLimits(TypedDict):
    """The keyword arguments of :func:`_time_calls`."""

    min_calls: int
    min_seconds: float
    max_calls: int


def _time_calls(score: Scorer, batches: list[pd.DataFrame], *, min_calls: int, min_seconds: float,
                max_calls: int) -> list[int]:
    """Nanoseconds per call of ``score``, cycling through ``batches``."""
    times: list[int] = []
    start = time.perf_counter()
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() - start < min_seconds):
        batch = batches[len(times) % len(batches)]
        t0 = time.perf_counter_ns()
        score(batch)
        times.append(time.perf_counter_ns() - t0)
    return times


def _summary(variant: str, batch_size: int, times: list[int]) -> Measurement:
    import numpy as np

    ms = np.asarray(times) / 1e6
    return Measurement(variant, batch_size, len(ms), float(np.percentile(ms, 50)), float(np.percentile(ms, 95)),
                       float(np.percentile(ms, 99)), float(batch_size * len(ms) / (ms.sum() / 1e3)))


def measure(variant: str, score: Scorer, frame: pd.DataFrame, batch_size: int, *,
            min_calls: int = 30, min_seconds: float = 1.0, max_calls: int = 5000, warmup: int = 5) -> Measurement:
    """Time ``score`` on batches of ``batch_size`` rows: per-call percentiles and rows/s."""
    batches = _batches(frame, batch_size, min(8, max_calls))
    for i in range(warmup):
        score(batches[i % len(batches)])
    return _summary(variant, batch_size, _time_calls(score, batches, min_calls=min_calls, min_seconds=min_seconds,
                                                     max_calls=max_calls))


def run(variants: dict[str, Scorer], frame: pd.DataFrame, batch_sizes: Sequence[int] = BATCH_SIZES,
        *, single_row_seconds: float = 2.0, batch_seconds: float = 1.0, rounds: int = 1,
        warmup: int = 5) -> list[Measurement]:
    """Every variant at every batch size, on the same rows.

    Variants take turns batch size by batch size; with ``rounds`` > 1 each variant's time
    at a batch size is split into that many slices, taken in turn with the other variants,
    so a machine that slows down for a few seconds slows every variant alike instead of
    the one that happened to be measured then.
    """
    import math

    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    results = []
    for size in batch_sizes:
        limits: _CallLimits
        if size == 1:
            limits = {"min_calls": 1000, "min_seconds": single_row_seconds, "max_calls": 20000}
        else:
            limits = {"min_calls": 5 if size > 10_000 else 30, "min_seconds": batch_seconds, "max_calls": 2000}
        per_round: _CallLimits = {"min_calls": math.ceil(limits["min_calls"] / rounds),
                                  "min_seconds": limits["min_seconds"] / rounds,
                                  "max_calls": math.ceil(limits["max_calls"] / rounds)}
        batches = _batches(frame, size, min(8, limits["max_calls"]))
        times: dict[str, list[int]] = {name: [] for name in variants}
        for score in variants.values():
            for i in range(warmup):
                score(batches[i % len(batches)])
        for _ in range(rounds):
            for name, score in variants.items():
                times[name] += _time_calls(score, batches, **per_round)
        results += [_summary(name, size, times[name]) for name in variants]
    return results


def table(results: list[Measurement]) -> str:
    lines = ["| variant | batch | calls | p50 ms | p95 ms | p99 ms | rows/s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {m.variant} | {m.batch_size} | {m.calls} | {m.p50_ms:.3f} | {m.p95_ms:.3f} | {m.p99_ms:.3f} | "
              f"{m.rows_per_s:,.0f} |" for m in results]
    return "\n".join(lines)


def chart(results: list[Measurement], path: Path, title: str) -> Path:
    """PNG: p50 latency (with p99 whiskers) by batch size, one line per variant, log scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for variant in dict.fromkeys(m.variant for m in results):
        rows = [m for m in results if m.variant == variant]
        sizes = [m.batch_size for m in rows]
        left.errorbar(sizes, [m.p50_ms for m in rows], yerr=[[0] * len(rows), [m.p99_ms - m.p50_ms for m in rows]],
                      marker="o", capsize=3, label=variant)
        right.plot(sizes, [m.rows_per_s for m in rows], marker="o", label=variant)
    for axis, label in ((left, "latency per call, ms (p50, bar to p99)"), (right, "throughput, rows/s")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("batch size")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def as_dicts(results: list[Measurement]) -> list[dict[str, Any]]:
    return [asdict(m) for m in results]


def sla_failures(results: list[Measurement], variant: str, sla: Any) -> list[str]:
    """What ``variant`` misses of the SLA (empty: it meets it)."""
    by_size = {m.batch_size: m for m in results if m.variant == variant}
    failures = []
    single = by_size.get(1)
    if single is None:
        failures.append("single-row latency was not measured")
    elif single.p99_ms > sla.single_row_p99_ms:
        failures.append(f"single-row p99 {single.p99_ms:.3f} ms > {sla.single_row_p99_ms} ms")
    for size, floor in sorted(sla.min_rows_per_s.items()):
        got = by_size.get(size)
        if got is None or got.rows_per_s < floor:
            failures.append(f"throughput at batch {size}: {got.rows_per_s if got else 0:,.0f} rows/s < {floor:,.0f}")
    return failures


def benchmark_version(config: Any, ws: Any, *, version: str, if_exists: str = "skip") -> dict[str, Any]:
    """The ``benchmark`` step: published ONNX variants and the native model, side by side.

    Every published precision runs on every available provider of the export preference
    (CPU always, CUDA/TensorRT where a GPU is present) through :class:`OnnxModel` with one
    intra-op thread (how the server runs), next to the native model at the same batch
    sizes. The SLA is checked on the serving provider; the variant to serve is the fastest
    single-row p99 among those meeting it. The verdict is written (file, MLflow artifact,
    version tags) before it is returned.
    """
    import json
    import tempfile

    from mlflywheel.services import tracking
    from mlflywheel.services.data.io import write_text_atomic
    from mlflywheel.services.dataset import (
        holdout_split,
        load_snapshot,
        model_inputs,
        snapshot_path,
    )
    from mlflywheel.services.errors import GateMisconfigured, RegistryError
    from mlflywheel.services.native import load_native_version
    from mlflywheel.services.runtime import resolve_providers
    from mlflywheel.services.served import load_version

    spec = config.benchmark
    if spec.sla is None:
        raise GateMisconfigured(f"{config.name}: benchmark.sla is not configured; the benchmark gate refuses to pass "
                                "a model against no SLA")
    name = config.model_name
    client = tracking.client(ws)
    mv = client.get_model_version(name, version)
    run_id = mv.run_id
    if run_id is None:
        raise RegistryError(f"{name} v{version} has no MLflow run to read or log the benchmark with")
    if mv.tags.get("flywheel.benchmark.decision") and if_exists == "skip":
        return {"name": name, "version": version, "reused": True, "decision": mv.tags["flywheel.benchmark.decision"],
                "serve_variant": mv.tags.get(TAG_SERVE_VARIANT),
                "reasons": mv.tags.get("flywheel.benchmark.reasons", ""), "run_id": run_id,
                "experiment_id": client.get_run(run_id).info.experiment_id}
    digest = mv.tags.get(TAG_DIGEST)
    _, holdout = holdout_split(load_snapshot(str(snapshot_path(ws, config.name, str(digest))),
                                             digest), config)
    frame = model_inputs(holdout, config)
    providers = resolve_providers(config.export.providers)
    variants: dict[str, Scorer] = {}
    with tracking.active(ws):
        native = load_native_version(ws, name, str(version))
    variants["native"] = lambda batch: native.predict_proba(batch)
    for precision in ("fp32", "int8"):
        if mv.tags.get(f"flywheel.onnx.{precision}.published") != "true":
            continue
        for provider in providers:
            model = load_version(ws, name, version, precision=precision, providers=[provider], intra_op_threads=1,
                                 expected_features=config.feature_columns)
            if model.provider == provider:
                variants[f"onnx-{precision}@{provider.removesuffix('ExecutionProvider')}"] = model.predict_proba
    results = run(variants, frame, spec.batch_sizes, single_row_seconds=2 * spec.seconds_per_point,
                  batch_seconds=spec.seconds_per_point)
    serving = spec.serving_provider.removesuffix("ExecutionProvider")
    candidates = {v: sla_failures(results, v, spec.sla) for v in variants if v.endswith(f"@{serving}")}
    passing = [v for v, failures in candidates.items() if not failures]
    p99 = {m.variant: m.p99_ms for m in results if m.batch_size == 1}
    chosen = min(passing, key=lambda v: p99[v]) if passing else None
    reasons = [] if chosen else (
        [f"{v}: {'; '.join(f)}" for v, f in candidates.items()] or [f"no published ONNX variant runs on {serving}"])
    verdict = {"pipeline": config.name, "model_name": name, "version": version,
               "decision": "approved" if chosen else "rejected", "serve_variant": chosen, "reasons": reasons,
               "sla": spec.sla.model_dump(), "serving_provider": spec.serving_provider, "providers": providers,
               "sla_checks": candidates, "results": as_dicts(results), "rows": len(frame)}
    path = ws.reports_dir / config.name / "benchmark" / f"{name}-v{version}.json"
    write_text_atomic(json.dumps(verdict, indent=2), path)
    client.log_text(run_id, json.dumps(verdict, indent=2), "benchmark/verdict.json")
    client.log_text(run_id, table(results), "benchmark/table.md")
    with tempfile.TemporaryDirectory() as tmp:
        png = chart(results, Path(tmp) / "latency.png", f"{name} v{version}: latency and throughput by batch size")
        client.log_artifact(run_id, str(png), "benchmark")
    for m in results:
        key = f"bench.{m.variant.replace('@', '.')}.b{m.batch_size}"
        client.log_metric(run_id, f"{key}.p99_ms", m.p99_ms)
        client.log_metric(run_id, f"{key}.rows_per_s", m.rows_per_s)
    client.set_model_version_tag(name, version, "flywheel.benchmark.decision", verdict["decision"])
    client.set_model_version_tag(name, version, "flywheel.benchmark.reasons", tag_value("; ".join(reasons)))
    if chosen:
        client.set_model_version_tag(name, version, TAG_SERVE_VARIANT, chosen)
    return {"name": name, "version": version, "reused": False, "decision": verdict["decision"],
            "serve_variant": chosen, "reasons": reasons, "verdict_path": str(path), "run_id": run_id,
            "experiment_id": client.get_run(run_id).info.experiment_id,
            "single_row_p99_ms": p99}
