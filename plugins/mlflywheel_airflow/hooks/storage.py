"""Remote landing data and predictions on S3, through the Amazon provider's ``S3Hook``.

The core reads and writes local files only. When ``FLYWHEEL_LANDING_URI`` names
``s3://bucket/prefix``, an operator that reads landing data first mirrors the partitions it
needs from ``<prefix>/<data.landing>/ds=YYYY-MM-DD/`` into the local landing root (the same
relative layout); when ``FLYWHEEL_PREDICTIONS_URI`` is set, ``batch_score`` uploads each
published partition to ``<prefix>/<pipeline>/ds=YYYY-MM-DD/``. The connection is
``FLYWHEEL_AWS_CONN_ID`` (default ``aws_default``, type ``aws``; extra ``endpoint_url`` for
MinIO or another S3 API). Without the variables nothing here runs.

Mirroring downloads to a temporary name and renames, so a reader never sees half a file, and
skips an object whose ETag and size match what was downloaded before (kept next to the file
in ``.<name>.s3.json``; readers skip dot files). A required partition that is not in the
bucket raises :class:`~mlflywheel.services.errors.DataNotFound` naming the key: late data, retried.

Uploads put the data files first and ``_manifest.json`` last, after removing the old manifest
and then the previous run's leftover files: a reader that waits for the manifest never sees a
half-written or mixed partition.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

log = logging.getLogger(__name__)
DEFAULT_CONN_ID = "aws_default"
MANIFEST = "_manifest.json"
_PARTITION = re.compile(r"^ds=(\d{4}-\d{2}-\d{2})/([^/]+)$")


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` split; ``prefix`` has no leading or trailing slash."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str, variable: str) -> S3Location:
        from mlflywheel.services.errors import ConfigError

        match = re.fullmatch(r"s3a?://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?", uri.strip())
        if not match:
            raise ConfigError(f"{variable}: expected s3://bucket[/prefix] (bucket: 3-63 lowercase letters, "
                              f"digits, dots or hyphens), found {uri!r}")
        return cls(bucket=match.group(1), prefix=(match.group(2) or "").strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


def conn_id() -> str:
    """The Airflow connection for S3: ``FLYWHEEL_AWS_CONN_ID`` or ``aws_default``."""
    return os.environ.get("FLYWHEEL_AWS_CONN_ID") or DEFAULT_CONN_ID


def s3_client(aws_conn_id: str | None = None) -> Any:
    """A boto3 S3 client from the Airflow connection (endpoint, region and keys from it)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=aws_conn_id or conn_id()).get_conn()


# --- landing --------------------------------------------------------------------------
def landing_lookback_days(config: PipelineConfig) -> int:
    """How many days before the interval end a step may read: the longest training, drift or
    retraining window plus the longest feature aggregation window (and the day before it)."""
    windows = [config.training.window_days, config.drift.window_days, config.drift.retrain_window_days]
    features = [w for v in config.features.views for a in v.aggregations for w in a.windows_days]
    return max(windows) + max(features, default=0) + 1


def mirror_landing(config: PipelineConfig, ws: Workspace, *, start: dt.datetime, end: dt.datetime,
                   require_interval: bool = True, client: Any = None) -> dict[str, Any]:
    """Copy the interval's landing partitions (and the lookback before them) from S3 to the local
    landing root; a no-op without ``FLYWHEEL_LANDING_URI``.

    Args:
        config: the pipeline (``data.landing`` is the path under the URI's prefix).
        ws: the workspace whose ``landing_root`` is the local cache.
        start: start of the data interval.
        end: end of the data interval (exclusive).
        require_interval: raise when an interval day is missing in the bucket (a drift check
            picks whatever recent days exist and says so itself).
        client: a boto3 S3 client; default: from the Airflow connection.

    Returns:
        ``{"source", "downloaded", "unchanged", "days"}`` (keys and days as strings).

    Raises:
        ConfigError: the URI is not ``s3://...`` or ``data.landing`` is an absolute path.
        DataNotFound: an interval day has no object in the bucket (names the key).
    """
    from mlflywheel.services.data.io import PART, interval_days, landing_dir
    from mlflywheel.services.errors import ConfigError, DataNotFound

    if not ws.landing_uri:
        return {"source": None, "downloaded": [], "unchanged": [], "days": []}
    location = S3Location.parse(ws.landing_uri, "FLYWHEEL_LANDING_URI")
    if Path(config.data.landing).is_absolute():
        raise ConfigError(f"data.landing in {config.name}.yaml is an absolute path ({config.data.landing!r}); "
                          "with FLYWHEEL_LANDING_URI it must be relative to the landing root")
    client = client or s3_client()
    base = location.key(config.data.landing) + "/"
    wanted = interval_days(start, end)
    first = wanted[-1] - dt.timedelta(days=landing_lookback_days(config))
    objects: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=base):
        for obj in page.get("Contents", []):
            match = _PARTITION.match(obj["Key"][len(base):])
            if match and first <= dt.date.fromisoformat(match.group(1)) <= wanted[-1]:
                objects[obj["Key"]] = obj
    if require_interval:
        for day in wanted:
            key = f"{base}ds={day.isoformat()}/{PART}"
            if key not in objects:
                raise DataNotFound(f"s3://{location.bucket}/{key}: landing partition for {day} not found "
                                   f"(pipeline {config.name!r}, FLYWHEEL_LANDING_URI={ws.landing_uri})")
    local_root = landing_dir(config, ws)
    downloaded, unchanged = [], []
    for key, obj in sorted(objects.items()):
        target = local_root / key[len(base):]
        if _download_if_changed(client, location.bucket, obj, target):
            downloaded.append(key)
        else:
            unchanged.append(key)
    days = sorted({key[len(base) + 3:len(base) + 13] for key in objects})
    log.info("landing mirror %s -> %s: %d downloaded, %d unchanged, days %s..%s", location.uri(config.data.landing),
             local_root, len(downloaded), len(unchanged), days[0] if days else "-", days[-1] if days else "-")
    return {"source": location.uri(config.data.landing), "downloaded": downloaded, "unchanged": unchanged,
            "days": days}


def _sidecar(target: Path) -> Path:
    return target.with_name(f".{target.name}.s3.json")


def _download_if_changed(client: Any, bucket: str, obj: dict[str, Any], target: Path) -> bool:
    """Download ``obj`` to ``target`` unless the file there came from the same ETag and size."""
    record = {"key": obj["Key"], "etag": obj["ETag"].strip('"'), "size": int(obj["Size"])}
    sidecar = _sidecar(target)
    if target.is_file() and sidecar.is_file() and target.stat().st_size == record["size"]:
        try:
            if json.loads(sidecar.read_text()) == record:
                return False
        except ValueError:
            pass
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        client.download_file(bucket, obj["Key"], tmp)
        if os.path.getsize(tmp) != record["size"]:
            raise OSError(f"s3://{bucket}/{obj['Key']}: downloaded {os.path.getsize(tmp)} bytes, "
                          f"the listing said {record['size']}")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, sidecar)
    return True


# --- predictions ----------------------------------------------------------------------
def upload_predictions(config: PipelineConfig, ws: Workspace, result: dict[str, Any], *,
                       client: Any = None) -> list[str]:
    """Upload each partition ``batch_score`` published to ``FLYWHEEL_PREDICTIONS_URI``;
    a no-op without it. Returns the ``s3://`` URIs of the uploaded partitions.

    Args:
        config: the pipeline (partitions go under ``<prefix>/<pipeline>/``).
        ws: the workspace.
        result: the batch job's status (``output_root`` and ``days``).
        client: a boto3 S3 client; default: from the Airflow connection.
    """
    if not ws.predictions_uri:
        return []
    location = S3Location.parse(ws.predictions_uri, "FLYWHEEL_PREDICTIONS_URI")
    client = client or s3_client()
    root = Path(result["output_root"])
    uploaded = []
    for day in sorted(result.get("days", {})):
        local = root / f"ds={day}"
        if not (local / MANIFEST).is_file():
            raise FileNotFoundError(f"{local / MANIFEST}: batch_score reported day {day} but its partition "
                                    "has no manifest; nothing uploaded for it")
        uploaded.append(upload_partition(client, location, local, f"{config.name}/ds={day}"))
    return uploaded


def upload_partition(client: Any, location: S3Location, local: Path, relative: str) -> str:
    """Replace ``<prefix>/<relative>/`` with the files of ``local``: old manifest removed, data
    files uploaded, leftovers of the previous upload removed, manifest uploaded last."""
    prefix = location.key(relative) + "/"
    files = sorted(p for p in local.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    existing = [obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=prefix) for obj in page.get("Contents", [])]
    if prefix + MANIFEST in existing:
        client.delete_object(Bucket=location.bucket, Key=prefix + MANIFEST)
    for path in files:
        client.upload_file(str(path), location.bucket, prefix + path.name)
    current = {prefix + p.name for p in files}
    for key in existing:
        if key not in current and key != prefix + MANIFEST:
            client.delete_object(Bucket=location.bucket, Key=key)
    client.upload_file(str(local / MANIFEST), location.bucket, prefix + MANIFEST)
    log.info("uploaded %s (%d files + manifest) to s3://%s/%s", local, len(files), location.bucket, prefix)
    return f"s3://{location.bucket}/{prefix}"
