"""The Spark settings batch scoring sets on purpose, for spark-submit and direct runs alike."""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from mlflywheel.services.config import PipelineConfig


def spark_conf(config: PipelineConfig) -> dict[str, str]:
    """``--conf`` values for the job; the pipeline's ``batch.spark_conf`` wins over them."""
    python = os.environ.get("PYSPARK_PYTHON") or sys.executable
    conf = {
        # No web UI: nothing listens beyond what the job needs (enable it in batch.spark_conf).
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        # Arrow moves rows to and from the Python workers in large columnar batches.
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(config.batch.arrow_batch_rows),
        "spark.sql.adaptive.enabled": "true",
        # Python workers live across tasks, so each keeps its one ONNX session.
        "spark.python.worker.reuse": "true",
        # One OpenMP/ORT thread per worker: Spark already runs one worker per core.
        "spark.executorEnv.OMP_NUM_THREADS": "1",
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.sql.parquet.compression.codec": "zstd",
        # Standard UTC-adjusted microsecond timestamps instead of the deprecated INT96.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }
    conf.update(config.batch.spark_conf)
    return conf


def get_session(config: PipelineConfig, app_name: str) -> SparkSession:
    """The job's session: spark-submit's settings win, ours fill in what it left unset."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    # Attach to (under spark-submit) or start the JVM first: only then does SparkConf see
    # spark-submit's --master and --conf values, which must win over ours.
    SparkContext._ensure_initialized()
    given = SparkConf()
    builder = SparkSession.builder.appName(app_name)
    if not given.contains("spark.master"):
        builder = builder.master("local[*]")
    for key, value in spark_conf(config).items():
        if not given.contains(key):
            builder = builder.config(key, value)
    return builder.getOrCreate()


def partitions_for(rows: int, parallelism: int, rows_per_partition: int) -> int:
    """Enough partitions to keep every core busy, and no partition over ``rows_per_partition``."""
    return max(1, parallelism, math.ceil(rows / rows_per_partition))
