"""The batch-scoring job: spark-submit entry point and the function it runs.

    spark-submit include/mlflywheel/batch/job.py --pipeline fraud \\
        --start 2026-05-10T00:00:00+00:00 --end 2026-05-11T00:00:00+00:00

For each day ``start.date() <= D < end.date()`` (at least the start's day) it reads the
landing partition ``ds=D``, joins the Feast offline feature rows point-in-time (in Spark,
with each view's TTL, the same rows Feast's ``get_historical_features`` returns), moves rows
with nulls in required columns or unparsable numbers to quarantine, scores the rest with
``<model>@<alias>``'s serving variant through ``OnnxModel`` and publishes
``<predictions>/<pipeline>/ds=D/`` atomically with a ``_manifest.json``. Output rows must
equal valid input rows, or nothing is published. A status file under
``reports/<pipeline>/batch/<submission>.json`` tells the caller what happened.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.data.io import interval_days
from mlflywheel.services.errors import (
    DataNotFound,
    DataValidationError,
    FeatureError,
    FlywheelError,
    SchemaMismatch,
)
from mlflywheel.stages.batch_score import publish

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.served import Served
    from mlflywheel.services.settings import Workspace

log = logging.getLogger("mlflywheel.stages.batch_score")
OUTPUT_COLUMNS = ("score", "decision", "model_name", "model_version", "run_id")
EXIT_DETERMINISTIC = 3


def status_path(ws: Workspace, pipeline: str, submission: str) -> Path:
    return ws.reports_dir / pipeline / "batch" / f"{submission}.json"


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def _check_schema(frame: DataFrame, config: PipelineConfig, path: Path, needed: list[str]) -> list[str]:
    """Refuse missing columns and wrong column types; returns numeric columns stored as strings."""
    from pyspark.sql import types as T

    fields = {f.name: f.dataType for f in frame.schema.fields}
    missing = [c for c in needed if c not in fields]
    if missing:
        raise SchemaMismatch(f"{path}: lacks column(s) {missing}; batch scoring of {config.name!r} needs {needed}")
    ts = config.data.timestamp
    if not isinstance(fields[ts], (T.TimestampType, T.TimestampNTZType)):
        raise SchemaMismatch(f"{path}: column {ts!r}: expected a timestamp, found {fields[ts].simpleString()}")
    numeric_as_text = []
    for column in config.training.categorical:
        if column in fields and not isinstance(fields[column], T.StringType):
            raise SchemaMismatch(f"{path}: column {column!r}: expected strings (a categorical feature), "
                                 f"found {fields[column].simpleString()}")
    for column in config.training.numeric:
        if column not in fields:
            continue
        kind = fields[column]
        if isinstance(kind, T.StringType):
            numeric_as_text.append(column)
        elif isinstance(kind, T.BooleanType) or not isinstance(kind, T.NumericType):
            raise SchemaMismatch(f"{path}: column {column!r}: expected a number, found {kind.simpleString()}")
    return numeric_as_text


def _view_files(ws: Workspace, store: Any, view_name: str, day: dt.date) -> tuple[list[Path], dt.timedelta]:
    """Offline feature files a point-in-time join for ``day`` can use, and the view's TTL."""
    from mlflywheel.services.data.io import days_between
    from mlflywheel.services.features import offline_source_dir

    ttl = store.get_feature_view(view_name).ttl
    folder = offline_source_dir(store, view_name)
    # A file named F holds rows stamped F + 1 day; a request on D may use stamps in [D - ttl, D].
    first = day - dt.timedelta(days=ttl.days + 1)
    files = [folder / f"{d.isoformat()}.parquet" for d in days_between(first, day)]
    files = [f for f in files if f.is_file()]
    if not (folder / f"{(day - dt.timedelta(days=1)).isoformat()}.parquet").is_file():
        raise FeatureError(f"feature view {view_name!r}: no offline rows for requests on {day} "
                           f"({folder}/{day - dt.timedelta(days=1)}.parquet is missing); the training DAG's "
                           f"feature_materialize (or the batch DAG's feature step) builds it")
    return files, ttl


def join_features(spark: SparkSession, rows: DataFrame, config: PipelineConfig, ws: Workspace, store: Any,
                  day: dt.date) -> tuple[DataFrame, list[Path]]:
    """Left-join each view's latest feature row with ``stamp <= ts`` and ``stamp >= ts - ttl``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from mlflywheel.services.features import FEAST_TS

    ts = config.data.timestamp
    inputs = set(config.feature_columns)
    used: list[Path] = []
    rows = rows.withColumn("_row", F.monotonically_increasing_id())
    for view in config.features.views:
        columns = [c for c in view.feature_names() if c in inputs]
        if not columns:
            continue
        files, ttl = _view_files(ws, store, view.name, day)
        used += files
        feats = spark.read.parquet(*map(str, files)).select(
            F.col(view.entity).alias("_entity"), F.col(FEAST_TS).alias("_stamp"), *columns)
        condition = ((F.col(view.entity) == F.col("_entity")) & (F.col("_stamp") <= F.col(ts))
                     & (F.col("_stamp") >= F.col(ts) - F.expr(f"INTERVAL {int(ttl.total_seconds())} SECONDS")))
        latest = Window.partitionBy("_row").orderBy(F.col("_stamp").desc_nulls_last())
        rows = (rows.join(feats, condition, "left")
                .withColumn("_rank", F.row_number().over(latest))
                .where(F.col("_rank") == 1)
                .drop("_rank", "_entity", "_stamp"))
    return rows.drop("_row"), used


def _read(spark: SparkSession, path: Path) -> DataFrame:
    from pyspark.errors import AnalysisException

    try:
        return spark.read.parquet(str(path))
    except AnalysisException as exc:  # e.g. nanosecond timestamps, which Spark cannot read
        raise SchemaMismatch(f"{path}: Spark cannot read this Parquet file: {str(exc).splitlines()[0]}") from exc


def _validity(frame: DataFrame, required: list[str], numeric_as_text: list[str]) -> DataFrame:
    """Cast numbers stored as text; add ``_valid`` (boolean) and ``_reason`` (null for a valid row).

    ``_reason`` strings are only built for invalid rows, so valid rows cost one boolean.
    """
    from functools import reduce

    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    kinds = {f.name: f.dataType for f in frame.schema.fields}
    checks = []
    for column in numeric_as_text:
        raw = F.col(f"_raw_{column}")
        frame = frame.withColumn(f"_raw_{column}", F.col(column)).withColumn(
            column, F.expr(f"try_cast(`_raw_{column}` AS DOUBLE)"))
        checks.append((raw.isNotNull() & F.col(column).isNull(), f"not_a_number:{column}"))
    for column in required:
        if column in numeric_as_text:
            missing = F.col(f"_raw_{column}").isNull() | F.isnan(F.col(column))
        elif isinstance(kinds.get(column), (T.FloatType, T.DoubleType)):
            missing = F.col(column).isNull() | F.isnan(F.col(column))
        else:
            missing = F.col(column).isNull()
        checks.append((missing, f"null:{column}"))
    if not checks:
        return frame.withColumn("_valid", F.lit(True)).withColumn("_reason", F.lit(None).cast("string"))
    invalid = reduce(lambda a, b: a | b, [condition for condition, _ in checks])
    reason = F.concat_ws(",", *[F.when(condition, F.lit(label)) for condition, label in checks])
    return (frame.withColumn("_valid", ~invalid)
            .withColumn("_reason", F.when(F.col("_valid"), F.lit(None)).otherwise(reason)))


def _written_rows(folder: Path) -> int:
    """Rows Spark wrote into ``folder``, from the Parquet footers (no data read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(str(f)).metadata.num_rows for f in folder.glob("*.parquet"))


def score_day(spark: SparkSession, config: PipelineConfig, ws: Workspace, *, day: dt.date, served: Served,
              model_sha256: str, payload: Any, store: Any, output_root: Path, quarantine_root: Path,
              submission: str) -> dict[str, Any]:
    """Score one landing day and publish its partition (and its quarantine).

    One pass scores the valid rows (validity is checked inside it and invalid rows counted);
    a second pass writes the invalid rows with their reasons only when there are any.
    """
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from mlflywheel.services.data.io import partition_path
    from mlflywheel.stages.batch_score.score import make_scorer
    from mlflywheel.stages.batch_score.session import partitions_for

    started = time.perf_counter()
    data = config.data
    source = partition_path(config, ws, day)
    if not source.is_file():
        raise DataNotFound(f"{source}: landing partition for {day} not found (pipeline {config.name!r})")
    metadata = pq.ParquetFile(str(source)).metadata
    input_rows = metadata.num_rows
    keep = list(dict.fromkeys([data.id_column, data.entity, data.timestamp]))
    if config.batch.source == "features":
        needed = list(dict.fromkeys([*keep, *config.features.request_features, *config.batch_required_columns]))
    else:
        needed = list(dict.fromkeys([*keep, *config.feature_columns, *config.batch_required_columns]))
    raw = _read(spark, source)
    numeric_as_text = _check_schema(raw, config, source, needed)
    raw_columns = raw.columns
    frame = _validity(raw, config.batch_required_columns, numeric_as_text)
    inputs_used = [source]
    partitions = partitions_for(input_rows, spark.sparkContext.defaultParallelism, config.batch.rows_per_partition)
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    if config.batch.source == "features":
        frame, feature_files = join_features(spark, frame, config, ws, store, day)
        inputs_used += feature_files
    elif metadata.num_row_groups >= partitions:
        # The scan can split the file at row groups: no shuffle needed for parallelism.
        split = max(1 << 20, source.stat().st_size // partitions + 1)
        spark.conf.set("spark.sql.files.maxPartitionBytes", str(split))
    else:
        frame = frame.repartition(partitions)
    publish.clear_stale_staging(output_root, day)
    publish.clear_stale_staging(quarantine_root, day)
    phases = {"prepare": time.perf_counter() - started}

    fields = {f.name: f for f in frame.schema.fields}
    schema = T.StructType([fields[c] for c in keep] + [T.StructField("score", T.DoubleType(), False),
                                                        T.StructField("decision", T.ByteType(), False)])
    sc = spark.sparkContext
    unseen = {c: sc.accumulator(0) for c in config.training.categorical}
    rejected, checksum = sc.accumulator(0), sc.accumulator(0)
    scorer = make_scorer(sha256=model_sha256, payload=payload, providers=list(config.export.providers),
                         keep=keep, threshold=config.gate.decision_threshold, unseen=unseen, rejected=rejected,
                         checksum=checksum, version=served.version)
    scored = (frame.select(*keep, *config.feature_columns, "_valid").mapInPandas(scorer, schema)
              .withColumn("model_name", F.lit(served.name))
              .withColumn("model_version", F.lit(served.version))
              .withColumn("run_id", F.lit(served.run_id)))
    staging = publish.new_staging(output_root, day)
    scored.write.mode("error").parquet(str(staging))
    written = _written_rows(staging)
    phases["score_write"] = time.perf_counter() - started - sum(phases.values())

    bad_staging = publish.new_staging(quarantine_root, day)
    bad_staging.mkdir(parents=True)
    if rejected.value:
        bad = frame.where(~F.col("_valid")).select(
            *[F.col(f"_raw_{c}").alias(c) if c in numeric_as_text else F.col(c) for c in raw_columns], "_reason")
        bad.write.mode("overwrite").parquet(str(bad_staging))
    quarantined = _written_rows(bad_staging)
    bad_share = quarantined / input_rows if input_rows else 0.0
    input_digest = _sha256_files(inputs_used)
    phases["quarantine_digest"] = time.perf_counter() - started - sum(phases.values())

    manifest = {
        "pipeline": config.name, "day": day.isoformat(), "input_rows": input_rows, "rows": written,
        "quarantined_rows": quarantined, "bad_share": round(bad_share, 6),
        "model_name": served.name, "model_version": served.version, "model_run_id": served.run_id,
        "variant": served.variant, "model_sha256": model_sha256, "source": config.batch.source,
        "input_digest": input_digest, "inputs": [str(p) for p in inputs_used],
        "checksum": f"{checksum.value % (1 << 64):016x}", "partitions": partitions,
        "unseen_categories": {c: acc.value for c, acc in unseen.items() if acc.value},
        "submission": submission, "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "seconds": round(time.perf_counter() - started, 3),
        "phase_seconds": {k: round(v, 3) for k, v in phases.items()},
    }
    quarantine_manifest = {k: manifest[k] for k in ("pipeline", "day", "input_rows", "quarantined_rows",
                                                    "submission", "input_digest")}
    publish.write_manifest(bad_staging, quarantine_manifest)
    publish.publish(bad_staging, publish.partition_dir(quarantine_root, day))
    if written + quarantined != input_rows or quarantined != rejected.value:
        raise DataValidationError(f"reconciliation failed for {source}: {input_rows} input rows but {written} scored "
                                  f"+ {quarantined} quarantined (the scoring pass counted {rejected.value} invalid); "
                                  f"nothing published")
    if bad_share > config.batch.max_bad_share:
        raise DataValidationError(
            f"{source}: {quarantined} of {input_rows} rows ({bad_share:.2%}) failed validation, over "
            f"batch.max_bad_share={config.batch.max_bad_share:.2%}; predictions not published, rows with "
            f"reasons in {publish.partition_dir(quarantine_root, day)}",
            result_path=str(publish.partition_dir(quarantine_root, day)))
    publish.write_manifest(staging, manifest)
    publish.publish(staging, publish.partition_dir(output_root, day))
    log.info("%s %s: %d scored, %d quarantined, model %s v%s (%s), %.1f s %s", config.name, day, written,
             quarantined, served.name, served.version, served.variant, manifest["seconds"], manifest["phase_seconds"])
    return manifest


def run(spark: SparkSession, config: PipelineConfig, ws: Workspace, *, start: dt.datetime, end: dt.datetime,
        alias: str | None = None, submission: str = "manual", output_root: Path | None = None) -> dict[str, Any]:
    """Score every day of the interval with ``<model>@<alias>``; returns a JSON-safe summary.

    Raises:
        RegistryError: the alias does not exist.
        SchemaMismatch: the data lacks a model input or has a wrong type, or the model's inputs
            are not the pipeline's features.
        DataValidationError: too many invalid rows, or the output does not reconcile.
        DataNotFound: a landing partition is missing (worth a retry).
    """
    from mlflywheel.services.runtime import OnnxModel
    from mlflywheel.services.served import check_inputs, fetch_variant, resolve_alias

    alias = alias or config.batch.alias
    served = resolve_alias(ws, config.model_name, alias)
    with tempfile.TemporaryDirectory(prefix="flywheel-onnx-") as tmp:
        model_path, sha256 = fetch_variant(ws, served.name, served.version, served.precision, Path(tmp))
        probe = OnnxModel(model_path, expected_sha256=sha256, providers=["CPUExecutionProvider"])
        check_inputs(probe, config.feature_columns, f"{served.name}@{alias} (v{served.version}, {served.variant})")
        payload = spark.sparkContext.broadcast(model_path.read_bytes())
    store = None
    if config.batch.source == "features":
        from mlflywheel.services.features import load_store

        store = load_store(ws)
    output_root = output_root or ws.predictions_root / config.name
    quarantine_root = ws.quarantine_root / config.name
    days = [score_day(spark, config, ws, day=day, served=served, model_sha256=sha256, payload=payload, store=store,
                      output_root=output_root, quarantine_root=quarantine_root, submission=submission)
            for day in interval_days(start, end)]
    payload.destroy()
    return {"pipeline": config.name, "alias": alias, "model_name": served.name, "model_version": served.version,
            "variant": served.variant, "output_root": str(output_root),
            "rows": sum(d["rows"] for d in days), "quarantined_rows": sum(d["quarantined_rows"] for d in days),
            "days": {d["day"]: {k: d[k] for k in ("rows", "quarantined_rows", "checksum", "input_digest")}
                     for d in days}}


def main(argv: list[str] | None = None) -> int:
    """spark-submit entry point; exit 0 on success, 3 on a deterministic failure, 1 otherwise."""
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.settings import Workspace
    from mlflywheel.stages.batch_score.session import get_session

    parser = argparse.ArgumentParser(prog="mlflywheel.stages.batch_score.job", description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--start", required=True, type=dt.datetime.fromisoformat)
    parser.add_argument("--end", required=True, type=dt.datetime.fromisoformat)
    parser.add_argument("--alias", default=None)
    parser.add_argument("--submission", default=f"manual-{int(time.time())}")
    parser.add_argument("--output-root", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    ws = Workspace.from_env()
    status = status_path(ws, args.pipeline, args.submission)
    spark = None
    try:
        config = load_pipeline(ws.pipelines_dir / f"{args.pipeline}.yaml")
        spark = get_session(config, f"flywheel-batch-{config.name}")
        result = {"status": "success", **run(spark, config, ws, start=args.start, end=args.end, alias=args.alias,
                                              submission=args.submission, output_root=args.output_root)}
        code = 0
    except FlywheelError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        result = {"status": "failed", "error": type(exc).__name__, "message": str(exc),
                  "deterministic": exc.deterministic}
        code = EXIT_DETERMINISTIC if exc.deterministic else 1
    finally:
        if spark is not None:
            spark.stop()
    from mlflywheel.services.data.io import write_text_atomic

    write_text_atomic(json.dumps(result, indent=2, default=str), status)
    return code


if __name__ == "__main__":
    sys.exit(main())
