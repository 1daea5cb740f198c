"""The shipped fraud model: scikit-learn ``predict_proba`` vs the same pipeline in ONNX Runtime
(through ``OnnxModel``), same rows, same process, one run.

Trains the fraud pipeline on a generated 28-day window (no workspace needed), exports it,
checks parity, then measures single-row latency and throughput at batch 1, 32, 1024, 65536.
Writes bench/results/onnx_vs_sklearn.{json,png}.

Usage: .venv/bin/python bench/onnx_vs_sklearn.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKLEARN = "sklearn predict_proba (2 threads)"  # HGB predicts with OpenMP on both cores
ONNX_1 = "onnx fp32 (OnnxModel, 1 thread)"     # how the model server runs it
ONNX_2 = "onnx fp32 (OnnxModel, 2 threads)"


def main() -> None:
    import pandas as pd

    from mlflywheel import benchmark
    from mlflywheel.config import load_pipeline
    from mlflywheel.data.generate import write_landing
    from mlflywheel.export import export_variants
    from mlflywheel.features import materialize_and_snapshot
    from mlflywheel.runtime import OnnxModel
    from mlflywheel.settings import Workspace
    from mlflywheel.train.core import holdout_split, model_inputs
    from mlflywheel.train.sklearn import build

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FLYWHEEL_HOME"] = tmp
        ws = Workspace.from_env().ensure()
        config = load_pipeline(ROOT / "include" / "pipelines" / "fraud.yaml")
        end = dt.date(2026, 6, 1)
        write_landing(config, ws, start=end - dt.timedelta(days=60), end=end)
        snap = materialize_and_snapshot(config, ws, interval_end=dt.datetime.combine(end, dt.time(), dt.UTC),
                                        window_days=config.training.window_days)["snapshot"]
        frame = pd.read_parquet(snap["uri"])
        train, holdout = holdout_split(frame, config)
        estimator = build(config.training).fit(model_inputs(train, config), train[config.data.label])
        manifest = export_variants(estimator, holdout, config, Path(tmp) / "onnx")
        path = manifest["variants"]["fp32"]["path"]
        one = OnnxModel(path, intra_op_threads=1, providers=["CPUExecutionProvider"])
        two = OnnxModel(path, intra_op_threads=2, providers=["CPUExecutionProvider"])
        x = model_inputs(frame, config)
        variants = {SKLEARN: lambda b: estimator.predict_proba(b), ONNX_1: one.predict_proba,
                    ONNX_2: two.predict_proba}
        results = benchmark.run(variants, x)
    print(f"fraud HGB ({config.training.params}), {len(x)} distinct rows; parity fp32: "
          f"{manifest['variants']['fp32']['parity']['max_abs_diff']:.2e} max abs diff on {len(holdout)} rows")
    print(benchmark.table(results))
    by = {(m.variant, m.batch_size): m for m in results}
    sk = {size: by[(SKLEARN, size)] for size in benchmark.BATCH_SIZES}
    for variant in (ONNX_1, ONNX_2):
        ox = {size: by[(variant, size)] for size in benchmark.BATCH_SIZES}
        print(f"{variant} vs sklearn: single-row p99 {sk[1].p99_ms / ox[1].p99_ms:.1f}x lower, "
              f"p50 {sk[1].p50_ms / ox[1].p50_ms:.1f}x; throughput x" + ", x".join(
                  f"{ox[s].rows_per_s / sk[s].rows_per_s:.1f} at {s}" for s in benchmark.BATCH_SIZES))
    out = ROOT / "bench" / "results"
    benchmark.chart(results, out / "onnx_vs_sklearn.png", "fraud model: scikit-learn vs ONNX Runtime (CPU, 2 cores)")
    (out / "onnx_vs_sklearn.json").write_text(json.dumps({"parity": manifest["variants"]["fp32"]["parity"],
                                                          "results": benchmark.as_dicts(results)}, indent=2))


if __name__ == "__main__":
    main()
