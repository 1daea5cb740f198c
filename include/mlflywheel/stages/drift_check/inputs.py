"""What the drift monitor compares: the champion's training snapshot vs the newest data.

* Reference: the feature snapshot the ``@champion`` was trained on, found through its
  ``flywheel.dataset_digest`` version tag (or a digest given by hand) at
  ``$FLYWHEEL_HOME/snapshots/<pipeline>/<digest>/frame.parquet``.
* Current window: rows from a :class:`CurrentSource`. The shipped one,
  :class:`LandingSource`, takes the newest landing partitions and joins them point in time
  to the Feast feature service exactly as training does (``features.build_feature_tables``
  then ``features.training_frame``), so the monitor sees the features the model would see.
  A prediction-log source (the model server's log, which already carries features and
  scores) plugs in behind the same protocol.
* Scores: the champion's published ONNX variant (its ``flywheel.serve_variant``) through
  :class:`~mlflywheel.services.runtime.OnnxModel`, on both sides.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlflywheel.services import tracking
from mlflywheel.services.data.io import available_days, landing_dir
from mlflywheel.services.dataset import snapshot_path
from mlflywheel.services.errors import DriftInputError
from mlflywheel.services.names import TAG_DIGEST, TAG_SERVE_VARIANT
from mlflywheel.services.served import variant_precision

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.runtime import OnnxModel
    from mlflywheel.services.settings import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reference:
    """The reference side: the snapshot and the model version it belongs to."""

    digest: str
    path: Path
    model_name: str
    version: str
    serve_variant: str


def find_reference(config: PipelineConfig, ws: Workspace, reference: str = "champion") -> Reference:
    """The snapshot behind ``@champion`` (``reference="champion"``) or a snapshot digest.

    Raises:
        DriftInputError: no champion, a version without a digest tag, or a missing snapshot file.
    """
    from mlflywheel.services.registry import champion_version

    name = config.model_name
    version, variant = None, "onnx-fp32"
    champion = champion_version(tracking.client(ws), name)
    if champion is None:
        raise DriftInputError(f"{name}@champion does not exist: nothing is serving, so there is no reference "
                              f"to monitor (run {config.train_dag_id} first)")
    variant = champion.tags.get(TAG_SERVE_VARIANT, variant)
    if reference in ("", "champion"):
        digest = champion.tags.get(TAG_DIGEST, "")
        version = str(champion.version)
        if not digest:
            raise DriftInputError(f"{name} v{version} (@champion) has no {TAG_DIGEST} tag: "
                                  "its training snapshot cannot be found")
    else:
        digest = reference
    path = snapshot_path(ws, config.name, digest)
    if not path.is_file():
        raise DriftInputError(f"{path}: reference snapshot not found (digest {digest!r}"
                              f"{f', from {name} v{version} @champion' if version else ''})")
    return Reference(digest=digest, path=path, model_name=name, version=version or str(champion.version),
                     serve_variant=variant)


def load_reference(ref: Reference, columns: list[str]) -> pd.DataFrame:
    """The snapshot's rows, ``columns`` only, refusing a snapshot that lacks one (names the file)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(ref.path).names
    missing = [c for c in columns if c not in names]
    if missing:
        raise DriftInputError(f"{ref.path}: reference snapshot lacks column(s) {missing}; has {names}")
    return pq.read_table(ref.path, columns=columns).to_pandas()


def load_model(config: PipelineConfig, ws: Workspace, ref: Reference) -> OnnxModel:
    """The champion's serving variant on the CPU (a drift check scores thousands of rows, not millions)."""
    from mlflywheel.services.served import load_version

    precision = variant_precision(ref.serve_variant)
    return load_version(ws, ref.model_name, ref.version, precision=precision, providers=["CPUExecutionProvider"],
                        intra_op_threads=1, expected_features=config.feature_columns)


def score(model: OnnxModel, frame: pd.DataFrame, batch_size: int = 65536) -> np.ndarray:
    """Positive-class scores of every row, in batches."""
    import numpy as np

    if frame.empty:
        return np.zeros(0, dtype="float64")
    parts = [model.predict_proba(frame.iloc[i:i + batch_size]) for i in range(0, len(frame), batch_size)]
    return np.concatenate(parts).astype("float64")


# --- the current window ----------------------------------------------------------------
def window_days(config: PipelineConfig, ws: Workspace, as_of: dt.datetime, days: int) -> tuple[list[dt.date], str]:
    """The newest ``days`` landing partitions before ``as_of``'s day, or ``[]`` and why not.

    Stale data is a reason to skip, not to compare: a monitor that compares last week's
    partition every hour would report "no drift" about data nobody is scoring.
    """
    today = as_of.astimezone(dt.UTC).date()
    present = [d for d in available_days(config, ws) if d < today]
    if not present:
        return [], f"no landing partitions before {today} under {landing_dir(config, ws)}"
    newest = present[-1]
    stale = (today - newest).days
    if stale > config.drift.max_staleness_days:
        return [], (f"newest landing partition is {newest}, {stale} days before {today} "
                    f"(drift.max_staleness_days={config.drift.max_staleness_days}): no fresh data to judge")
    return [d for d in present if d > newest - dt.timedelta(days=days)], ""


class CurrentSource(Protocol):
    """Where current rows come from: feature columns, the id and the timestamp, per day."""

    name: str

    def rows(self, days: list[dt.date]) -> pd.DataFrame:
        """Rows of ``days`` with the model inputs, ``data.id_column`` and ``data.timestamp``."""
        ...


class LandingSource:
    """Landing partitions joined point in time to the Feast features, as in training."""

    name = "landing+feast"

    def __init__(self, config: PipelineConfig, ws: Workspace) -> None:
        self.config = config
        self.ws = ws

    def rows(self, days: list[dt.date]) -> pd.DataFrame:
        """Feature rows of ``days`` (the feature tables of those days are (re)built first, idempotently)."""
        from mlflywheel.services import features

        store = features.load_store(self.ws)
        features.apply_repo(store, self.ws)
        features.check_views(store, self.config)
        # A row on day D reads the feature row stamped at the end of D-1.
        table_days = sorted({d - dt.timedelta(days=k) for d in days for k in (0, 1)})
        features.build_feature_tables(self.config, self.ws, store, table_days)
        frame = features.training_frame(self.config, self.ws, store, sorted(days))
        # Labels in a current window are not trusted: live metrics read the labels zone.
        return frame.drop(columns=[self.config.data.label], errors="ignore")


def describe_source(source: CurrentSource, days: list[dt.date]) -> dict[str, Any]:
    return {"source": source.name, "days": [d.isoformat() for d in days]}
