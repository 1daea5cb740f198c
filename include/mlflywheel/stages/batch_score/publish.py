"""Publishing one day's output atomically: staging folder, manifest, one swap.

A partition is written whole into ``<root>/_staging/ds=<day>.<token>/`` (ignored by Spark,
pyarrow and pandas readers because of the leading underscore), its ``_manifest.json``
last, and only then made visible as ``<root>/ds=<day>``:

- no partition yet: one ``rename``;
- a previous partition: Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two folders in one
  step, so a reader sees the old complete partition or the new one, never neither and never
  a mix; the old one is then deleted. Where the kernel or filesystem lacks the call the old
  partition is renamed aside first (a reader may briefly find no partition, never a partial
  one).

A job killed before the swap leaves only its staging folder, which the next run of the same
day removes. Object stores have no rename: there, the manifest is the commit point (readers
read the files it lists), which this module does not implement yet.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MANIFEST = "_manifest.json"
STAGING = "_staging"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def partition_dir(root: Path, day: dt.date) -> Path:
    return root / f"ds={day.isoformat()}"


def new_staging(root: Path, day: dt.date) -> Path:
    """A fresh staging folder path for ``day`` (not created: Spark creates it when it writes)."""
    return root / STAGING / f"ds={day.isoformat()}.{uuid.uuid4().hex[:12]}"


def clear_stale_staging(root: Path, day: dt.date) -> list[str]:
    """Remove staging folders an earlier, killed run of ``day`` left behind."""
    removed = []
    staging = root / STAGING
    if staging.is_dir():
        for child in staging.glob(f"ds={day.isoformat()}.*"):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    if removed:
        log.warning("%s: removed %d stale staging folder(s) of %s: %s", root, len(removed), day, removed)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        errno = ctypes.get_errno()
        log.warning("renameat2(RENAME_EXCHANGE) %s <-> %s failed: %s", a, b, os.strerror(errno))
        return False
    return True


def publish(staging: Path, target: Path) -> None:
    """Make the complete ``staging`` folder visible as ``target``, replacing it in one step."""
    if not (staging / MANIFEST).is_file():
        raise RuntimeError(f"{staging}: refusing to publish a partition without its {MANIFEST}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.rename(staging, target)
    elif _exchange(staging, target):
        shutil.rmtree(staging)  # holds the previous partition now
    else:
        aside = staging.with_name(staging.name + ".previous")
        os.rename(target, aside)
        os.rename(staging, target)
        shutil.rmtree(aside)
    log.info("published %s", target)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``_manifest.json`` into ``folder`` (the last file of a partition)."""
    path = folder / MANIFEST
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def read_manifest(partition: Path) -> dict[str, Any]:
    path = partition / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (not a published partition)")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest
