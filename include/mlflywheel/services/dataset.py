"""The dataset every stage reads the same way: a digest-checked snapshot, its holdout, its model inputs.

Training, the gate, the exporter's parity check, the benchmark and replay all split a
snapshot with :func:`holdout_split` and feed :func:`model_inputs`, so they judge the same rows
with the same columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlflywheel.services.errors import FeatureError

if TYPE_CHECKING:
    import pandas as pd

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

SNAPSHOT_FILE = "frame.parquet"
SNAPSHOT_META = "snapshot.json"


def snapshot_dir(ws: Workspace, pipeline: str, digest: str) -> Path:
    """``$FLYWHEEL_HOME/snapshots/<pipeline>/<digest>/``: one folder per distinct training frame."""
    return ws.snapshots_dir / pipeline / str(digest)


def snapshot_path(ws: Workspace, pipeline: str, digest: str) -> Path:
    """The snapshot's Parquet file (``frame.parquet`` in :func:`snapshot_dir`)."""
    return snapshot_dir(ws, pipeline, digest) / SNAPSHOT_FILE


def load_snapshot(uri: str, digest: str | None = None) -> pd.DataFrame:
    """Read a snapshot, checking its digest when given (a changed file is not the dataset)."""
    import pandas as pd

    from mlflywheel.services.features import frame_digest

    path = Path(uri)
    if not path.is_file():
        raise FeatureError(f"{uri}: feature snapshot not found")
    frame = pd.read_parquet(path)
    if digest is not None and (found := frame_digest(frame)) != digest:
        raise FeatureError(f"{uri}: snapshot digest is {found}, expected {digest}; the file changed")
    return frame


def holdout_split(frame: pd.DataFrame, config: PipelineConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time-based split: the last ``holdout_days`` days of the window are the holdout."""
    import pandas as pd

    ts = frame[config.data.timestamp]
    cutoff = ts.max().normalize() - pd.Timedelta(days=config.training.holdout_days - 1)
    train, holdout = frame[ts < cutoff], frame[ts >= cutoff]
    label = config.data.label
    for name, part in (("training", train), ("holdout", holdout)):
        if part.empty or part[label].nunique() < 2:
            raise FeatureError(
                f"the {name} part of the snapshot (cutoff {cutoff:%Y-%m-%d}) has {len(part)} rows and "
                f"labels {sorted(part[label].unique().tolist())}; both classes are needed")
    return train, holdout


def model_inputs(frame: pd.DataFrame, config: PipelineConfig) -> pd.DataFrame:
    """The model's input columns in a fixed order, numerics as float32.

    float32 is the input contract of the exported ONNX graph (and of GPUs); training on the
    same precision puts every split threshold between float32-representable values, so the
    export reproduces the native model instead of flipping splits where two float64 values
    round to one float32. Integers become floats too: a count is missing for an entity
    with no feature row yet.
    """
    missing = [c for c in config.feature_columns if c not in frame.columns]
    if missing:
        raise FeatureError(f"model inputs {missing} are not columns of the frame (has {sorted(frame.columns)})")
    return frame[config.feature_columns].astype({c: "float32" for c in config.training.numeric})
