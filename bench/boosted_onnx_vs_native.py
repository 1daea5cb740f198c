"""XGBoost and LightGBM: each library's own ``predict_proba`` vs the same model in ONNX Runtime, one run.

Binary models of 200 trees, depth 6, on 30 numeric features (5 % missing values), trained by
mlflywheel's built-in ``xgboost`` and ``lightgbm`` trainers and exported as the pipeline
exports them (onnxmltools' converters through skl2onnx, parity checked). Measured on the same
rows, the variants taking turns in five rounds:

- ``<library> predict_proba``: the bare booster's scikit-learn API on a float32 array, with both
  cores (what a notebook or a Python service would call);
- ``onnx fp32 (OnnxModel, 1 thread)``: how the model server and batch scoring run it.

Goals (issue 17): single-row p99 at least 5x lower in ONNX Runtime; batch-1024 rows/s at least
the library's own. Writes bench/results/boosted_onnx_vs_native.json and prints the tables.

Usage: .venv/bin/python bench/boosted_onnx_vs_native.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEATURES = [f"f{i:02d}" for i in range(30)]
ROWS = 20_000
ROUNDS = 5
ONNX = "onnx fp32 (OnnxModel, 1 thread)"


def _data():
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    x = rng.normal(size=(ROWS, len(FEATURES))).astype("float32")
    logit = x[:, :8] @ rng.normal(size=8) + 0.8 * x[:, 8] * x[:, 9] - 2.0
    y = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype("int64")
    x[rng.random(x.shape) < 0.05] = np.nan
    return pd.DataFrame(x, columns=FEATURES), y


def main() -> None:
    import numpy as np

    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.runtime import OnnxModel
    from mlflywheel.stages import benchmark
    from mlflywheel.stages.export_quantize import export_variants
    from mlflywheel.stages.train.contract import TrainingData
    from mlflywheel.stages.train.sklearn import lightgbm, xgboost

    base = load_pipeline(ROOT / "include" / "pipelines" / "fraud.yaml")
    x, y = _data()
    split = int(ROWS * 0.8)
    report = {}
    for name, trainer in (("xgboost", xgboost), ("lightgbm", lightgbm)):
        training = base.training.model_copy(update={"trainer": name, "categorical": [], "numeric": FEATURES})
        config = base.model_copy(update={"training": training})
        data = TrainingData(pipeline="bench", x=x.iloc[:split], y=y[:split], x_val=x.iloc[split:], y_val=y[split:],
                            categorical=(), numeric=tuple(FEATURES), seed=7,
                            params={"n_estimators": 200, "max_depth": 6})
        pipeline = trainer(data)
        booster = pipeline.named_steps["model"]
        booster.set_params(n_jobs=2)
        holdout = x.iloc[split:].copy()
        holdout[config.data.label] = y[split:]
        with tempfile.TemporaryDirectory() as tmp:
            manifest = export_variants(pipeline, holdout, config, Path(tmp))
            onnx = OnnxModel(manifest["variants"]["fp32"]["path"], intra_op_threads=1,
                             providers=["CPUExecutionProvider"])
        native = f"{name} predict_proba (2 threads)"
        variants = {native: lambda b, m=booster: m.predict_proba(b.to_numpy(dtype=np.float32)),
                    ONNX: onnx.predict_proba}
        results = benchmark.run(variants, x, batch_sizes=(1, 32, 1024), single_row_seconds=3.0,
                                batch_seconds=2.0, rounds=ROUNDS)
        by = {(m.variant, m.batch_size): m for m in results}
        parity = manifest["variants"]["fp32"]["parity"]
        single = by[(native, 1)].p99_ms / by[(ONNX, 1)].p99_ms
        batch = by[(ONNX, 1024)].rows_per_s / by[(native, 1024)].rows_per_s
        print(f"{name}: 200 trees, depth 6, {len(FEATURES)} features; fp32 parity {parity['max_abs_diff']:.2e}")
        print(benchmark.table(results))
        print(f"{ONNX} vs {native}: single-row p99 {single:.1f}x lower (goal >= 5x); "
              f"batch 1024 rows/s x{batch:.2f} (goal >= 1)\n")
        report[name] = {"parity": parity, "single_row_p99_ratio": single, "batch_1024_throughput_ratio": batch,
                        "results": benchmark.as_dicts(results)}
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "boosted_onnx_vs_native.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
