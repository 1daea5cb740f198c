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
from typing import TYPE_CHECKING, Any

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


def measure(variant: str, score: Scorer, frame: pd.DataFrame, batch_size: int, *,
            min_calls: int = 30, min_seconds: float = 1.0, max_calls: int = 5000, warmup: int = 5) -> Measurement:
    """Time ``score`` on batches of ``batch_size`` rows: per-call percentiles and rows/s."""
    import numpy as np

    batches = [_rows(frame.iloc[i * batch_size % len(frame):], batch_size) for i in range(min(8, max_calls))]
    for i in range(warmup):
        score(batches[i % len(batches)])
    times = []
    start = time.perf_counter()
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() - start < min_seconds):
        batch = batches[len(times) % len(batches)]
        t0 = time.perf_counter_ns()
        score(batch)
        times.append(time.perf_counter_ns() - t0)
    ms = np.asarray(times) / 1e6
    return Measurement(variant, batch_size, len(ms), float(np.percentile(ms, 50)), float(np.percentile(ms, 95)),
                       float(np.percentile(ms, 99)), float(batch_size * len(ms) / (ms.sum() / 1e3)))


def run(variants: dict[str, Scorer], frame: pd.DataFrame, batch_sizes: Sequence[int] = BATCH_SIZES,
        *, single_row_seconds: float = 2.0, batch_seconds: float = 1.0) -> list[Measurement]:
    """Every variant at every batch size, interleaved by batch size so drift hits all alike."""
    results = []
    for size in batch_sizes:
        for name, score in variants.items():
            if size == 1:
                results.append(measure(name, score, frame, 1, min_calls=1000, min_seconds=single_row_seconds,
                                       max_calls=20000))
            else:
                results.append(measure(name, score, frame, size, min_calls=5 if size > 10_000 else 30,
                                       min_seconds=batch_seconds, max_calls=2000))
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
