"""Native models vs the same models in ONNX Runtime (through ``OnnxModel``), same rows, one run.

1. The shipped fraud pipeline (HistGradientBoosting): scikit-learn ``predict_proba`` vs ONNX.
2. The same data with the PyTorch trainer (``torch_mlp``): PyTorch eager vs ONNX fp32 (and
   INT8 when it passed parity).

Trains on a generated 28-day window (a throwaway workspace), exports, checks parity, then
measures single-row latency and throughput at batch 1, 32, 1024, 65536, the variants
taking turns in five rounds so that a slow few seconds on a shared machine hit them all. Writes
bench/results/onnx_vs_native.{json,png} and onnx_vs_torch.png.

Usage: .venv/bin/python bench/onnx_vs_native.py
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
TORCH = "pytorch eager (2 threads)"
ROUNDS = 5  # each variant's time at a batch size, in slices taken in turn with the others


def main() -> None:
    import pandas as pd

    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.data.generate import write_landing
    from mlflywheel.services.dataset import holdout_split, model_inputs
    from mlflywheel.services.runtime import OnnxModel
    from mlflywheel.services.settings import Workspace
    from mlflywheel.stages import benchmark
    from mlflywheel.stages.export_quantize import export_variants
    from mlflywheel.stages.feature_materialize import materialize_and_snapshot
    from mlflywheel.stages.train.sklearn import build

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
        results = benchmark.run(variants, x, single_row_seconds=3.0, batch_seconds=2.0, rounds=ROUNDS)

        mlp_config = config.model_copy(update={"training": config.training.model_copy(
            update={"trainer": "torch_mlp", "params": {}})})
        mlp = build(mlp_config.training).fit(model_inputs(train, config), train[config.data.label].to_numpy(),
                                             X_val=model_inputs(holdout, config),
                                             y_val=holdout[config.data.label].to_numpy())
        calibration = train.sample(min(2000, len(train)), random_state=config.training.seed)  # as export_version
        mlp_manifest = export_variants(mlp, holdout, mlp_config, Path(tmp) / "mlp", calibration=calibration)
        mlp_variants = {TORCH: lambda b: mlp.predict_proba(b)}
        for precision, variant in mlp_manifest["variants"].items():
            if variant["published"]:
                mlp_variants[f"onnx {precision} (OnnxModel, 1 thread)"] = OnnxModel(
                    variant["path"], intra_op_threads=1, providers=["CPUExecutionProvider"]).predict_proba
        mlp_results = benchmark.run(mlp_variants, x, rounds=ROUNDS)
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
    print()
    print(f"fraud MLP (torch_mlp, {mlp.epochs_} epochs); fp32 parity "
          f"{mlp_manifest['variants']['fp32']['parity']['max_abs_diff']:.2e}; int8: "
          + ("published" if mlp_manifest["variants"]["int8"]["published"]
             else mlp_manifest["variants"]["int8"]["reason"]))
    print(benchmark.table(mlp_results))
    eager = {m.batch_size: m for m in mlp_results if m.variant == TORCH}
    for m in mlp_results:
        if m.variant != TORCH and m.batch_size == 1:
            print(f"{m.variant} vs PyTorch eager: single-row p50 {eager[1].p50_ms / m.p50_ms:.1f}x, "
                  f"p99 {eager[1].p99_ms / m.p99_ms:.1f}x lower")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    benchmark.chart(results, out / "onnx_vs_native.png", "fraud HGB: scikit-learn vs ONNX Runtime (CPU, 2 cores)")
    benchmark.chart(mlp_results, out / "onnx_vs_torch.png", "fraud MLP: PyTorch eager vs ONNX Runtime (CPU, 2 cores)")
    (out / "onnx_vs_native.json").write_text(json.dumps({
        "hgb": {"parity": manifest["variants"]["fp32"]["parity"], "results": benchmark.as_dicts(results)},
        "mlp": {"export": mlp_manifest["variants"], "results": benchmark.as_dicts(mlp_results)}}, indent=2))


if __name__ == "__main__":
    main()
