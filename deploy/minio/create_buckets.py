"""minio-init (one-shot): create the stack's buckets on MinIO if they do not exist.

    python deploy/minio/create_buckets.py mlflow [BUCKET ...]

Endpoint and credentials from ``MLFLOW_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``),
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``; boto3 comes from the image's lock.
"""

from __future__ import annotations

import os
import sys


def create_buckets(names: list[str]) -> list[str]:
    """Create each bucket that is missing; returns the ones created."""
    import boto3
    from botocore.exceptions import ClientError

    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        raise SystemExit("MLFLOW_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL) is not set: where is MinIO?")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    created = []
    for name in names:
        try:
            s3.head_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            s3.create_bucket(Bucket=name)
            created.append(name)
    return created


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: create_buckets.py BUCKET [BUCKET ...]", file=sys.stderr)
        return 2
    created = create_buckets(argv)
    print(f"buckets {argv}: created {created or 'none'} (the others existed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
