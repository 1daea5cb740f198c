"""Batch scoring, side by side in one run: our Spark job vs what a user would otherwise write.

Same data (1M rows x 22 features: 4 categorical, 18 numeric), the same HistGradientBoosting
pipeline with a one-hot ColumnTransformer, the same 2 cores, one warm ``local[2]`` session:

1. ``mlflywheel`` batch job for one day (``job.score_day``: validation and quarantine, ONNX
   Runtime through ``OnnxModel`` in ``mapInPandas``, reconciliation and checksum, atomic
   publish with a manifest);
2. ``mlflow.pyfunc.spark_udf`` on the same model logged with MLflow (what MLflow users reach for);
3. a Spark pass-through: reads the same input, writes the same output shape, scores nothing
   (the floor any Spark job pays for moving the data);
4. single-process pandas + ONNX Runtime (2 threads): the floor without Spark.

Each Spark variant runs twice; the faster run counts. Rows/s are given without and with the
session start-up. Writes bench/results/batch_vs_spark_udf.json.

Usage: .venv/bin/python bench/batch_vs_spark_udf.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 6, 1)
CATEGORICAL = [f"cat_{i}" for i in range(4)]
NUMERIC = [f"num_{i}" for i in range(18)]


def make_frame(rows: int, seed: int = 7):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = {"row_id": [f"r{i:08d}" for i in range(rows)], "entity_id": rng.integers(0, 50_000, rows),
            "event_timestamp": (pd.Timestamp(DAY, tz="UTC") + pd.to_timedelta(rng.integers(0, 86_400, rows), "s"))
            .astype("datetime64[us, UTC]")}
    for i, name in enumerate(CATEGORICAL):
        data[name] = rng.choice([f"{name}_v{j}" for j in range(5 + 3 * i)], rows)
    for name in NUMERIC:
        data[name] = rng.normal(0, 1, rows)
    frame = pd.DataFrame(data)
    logit = frame["num_0"] * 1.5 - frame["num_1"] + (frame["cat_0"] == "cat_0_v1") * 2 - 3
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame


def bench_config(home: Path):
    from mlflywheel.services.config import load_pipeline

    config = load_pipeline(ROOT / "include" / "pipelines" / "fraud.yaml")
    return config.model_copy(update={
        "name": "bench22",
        "data": config.data.model_copy(update={"landing": "bench22/rows", "entity": "entity_id",
                                               "id_column": "row_id", "label": "label"}),
        "features": config.features.model_copy(update={"request_features": CATEGORICAL + NUMERIC}),
        # scikit-learn's defaults (100 iterations at most, early stopping on) with the one-hot pipeline
        "training": config.training.model_copy(update={"categorical": CATEGORICAL, "numeric": NUMERIC,
                                                       "params": {"early_stopping": True}}),
        "batch": config.batch.model_copy(update={"source": "landing"}),
    })


def timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    import mlflow
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlflywheel.services.data.io import partition_path
    from mlflywheel.services.dataset import model_inputs
    from mlflywheel.services.runtime import OnnxModel, sha256_file
    from mlflywheel.services.served import Served
    from mlflywheel.services.settings import Workspace
    from mlflywheel.stages.batch_score.job import score_day
    from mlflywheel.stages.batch_score.session import get_session
    from mlflywheel.stages.export_quantize import export_variants
    from mlflywheel.stages.train.sklearn import build

    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-batch-"))
    os.environ["FLYWHEEL_HOME"] = str(tmp)
    ws = Workspace.from_env().ensure()
    config = bench_config(tmp)
    frame = make_frame(args.rows)
    source = partition_path(config, ws, DAY)
    source.parent.mkdir(parents=True)
    # A landing file as a well-behaved producer writes it: row groups of 128k rows.
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source, row_group_size=131_072)
    train = frame.sample(100_000, random_state=0)
    estimator = build(config.training).fit(model_inputs(train, config), train["label"])
    holdout = frame.sample(20_000, random_state=1)
    manifest = export_variants(estimator, holdout, config, tmp / "onnx")
    onnx_path = Path(manifest["variants"]["fp32"]["path"])
    sha = sha256_file(onnx_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(estimator, name="model", pyfunc_predict_fn="predict_proba",
                                        serialization_format="cloudpickle",
                                        input_example=model_inputs(frame.head(5), config))
    print(f"{args.rows:,} rows x {len(CATEGORICAL) + len(NUMERIC)} features, {source.stat().st_size / 1e6:.0f} MB "
          f"Parquet; fp32 parity {manifest['variants']['fp32']['parity']['max_abs_diff']:.1e}")

    started = time.perf_counter()
    spark = get_session(config.model_copy(update={"batch": config.batch.model_copy(
        update={"spark_conf": {"spark.master": "local[2]", "spark.driver.memory": "4g"}})}), "bench-batch")
    startup = time.perf_counter() - started
    from pyspark.sql import functions as F

    served = Served(name="bench22", version="1", run_id="bench", variant="onnx-fp32@CPU", precision="fp32")
    payload = spark.sparkContext.broadcast(onnx_path.read_bytes())
    keep = ["row_id", "entity_id", "event_timestamp"]
    phases: list[dict[str, float]] = []

    def ours() -> None:
        phases.append(score_day(spark, config, ws, day=DAY, served=served, model_sha256=sha, payload=payload,
                                store=None, output_root=tmp / "out" / "ours", quarantine_root=tmp / "quarantine",
                                submission="bench")["phase_seconds"])

    udf = mlflow.pyfunc.spark_udf(spark, info.model_uri, result_type="array<double>", env_manager="local")

    def spark_udf() -> None:
        rows = spark.read.parquet(str(source))
        inputs = [*CATEGORICAL, *(F.col(c).cast("float").alias(c) for c in NUMERIC)]  # the model's signature
        scored = rows.withColumn("score", udf(F.struct(*inputs))[1])
        out = scored.select(*keep, "score", (F.col("score") >= 0.5).cast("tinyint").alias("decision"),
                            F.lit("bench22").alias("model_name"), F.lit("1").alias("model_version"),
                            F.lit("bench").alias("run_id"))
        out.write.mode("overwrite").parquet(str(tmp / "out" / "spark_udf"))

    def passthrough() -> None:
        rows = spark.read.parquet(str(source))
        # touches every feature column (a constant would let Spark skip reading them)
        score = (F.abs(F.xxhash64(*config.feature_columns)) % 1000) / 1000.0
        out = rows.select(*keep, score.alias("score"), F.lit(0).cast("tinyint").alias("decision"),
                          F.lit("bench22").alias("model_name"), F.lit("1").alias("model_version"),
                          F.lit("bench").alias("run_id"))
        out.write.mode("overwrite").parquet(str(tmp / "out" / "passthrough"))

    def single_process() -> None:
        model = OnnxModel(onnx_path, expected_sha256=sha, intra_op_threads=2, providers=["CPUExecutionProvider"])
        parts = []
        for batch in pq.ParquetFile(str(source)).iter_batches(batch_size=65_536):
            chunk = batch.to_pandas()
            out = chunk[keep].copy()
            out["score"] = model.predict_proba(chunk)
            out["decision"] = (out["score"] >= 0.5).astype("int8")
            parts.append(pa.Table.from_pandas(out, preserve_index=False))
        pq.write_table(pa.concat_tables(parts), tmp / "out" / "single.parquet")

    (tmp / "out").mkdir(exist_ok=True)
    results = {}
    for name, func in (("pass-through (Spark, no scoring)", passthrough), ("mlflywheel batch job", ours),
                       ("mlflow.pyfunc.spark_udf", spark_udf)):
        results[name] = min(timed(func) for _ in range(2))
    results["pandas + ONNX Runtime, 1 process"] = min(timed(single_process) for _ in range(2))
    spark.stop()

    rows = args.rows
    print(f"\nSpark session start-up (local[2]): {startup:.1f} s\n")
    print(f"| {'variant':36} | {'seconds':>7} | {'rows/s':>10} | {'rows/s incl. start-up':>21} |")
    print(f"|{'-' * 38}|{'-' * 9}|{'-' * 12}|{'-' * 23}|")
    for name, seconds in results.items():
        with_start = (rows / (seconds + startup) if "Spark" in name or "spark" in name or "job" in name
                      else rows / seconds)
        print(f"| {name:36} | {seconds:7.2f} | {rows / seconds:10,.0f} | {with_start:21,.0f} |")
    print(f"mlflywheel job phases (s): {phases}")
    ours_s = results["mlflywheel batch job"]
    print(f"\nours vs spark_udf: {results['mlflow.pyfunc.spark_udf'] / ours_s:.2f}x the rows/s (target >= 1.8x); "
          f"ours vs pass-through: {ours_s / results['pass-through (Spark, no scoring)']:.2f}x the time "
          f"(target <= 1.2x)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "batch_vs_spark_udf.json").write_text(json.dumps(
        {"rows": rows, "features": len(CATEGORICAL) + len(NUMERIC), "spark_startup_s": startup,
         "seconds": results, "job_phase_seconds": phases,
         "rows_per_s": {k: rows / v for k, v in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
