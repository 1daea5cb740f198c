"""Where the offline sources live: the workspace's Feast folder (not a Feast object)."""

from __future__ import annotations

import os
from pathlib import Path


def offline_source(pipeline: str, view: str) -> str:
    """Folder of daily Parquet files that mlflywheel writes for one feature view."""
    home = os.environ.get("FLYWHEEL_HOME") or str(Path(__file__).resolve().parents[1] / ".flywheel")
    return str(Path(home).resolve() / "feast" / "offline" / pipeline / view)
