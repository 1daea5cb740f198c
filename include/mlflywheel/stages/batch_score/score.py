"""The executor side of batch scoring: one ONNX session per Python worker, Arrow batches in.

The driver broadcasts the model bytes once; each worker process writes them to a local file
the first time it needs them, checks the SHA-256 (``OnnxModel``) and keeps the session for
every later batch and task (``spark.python.worker.reuse``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mlflywheel.services.runtime import OnnxModel

_SESSIONS: dict[str, OnnxModel] = {}


def worker_model(sha256: str, payload: Any, providers: list[str]) -> OnnxModel:
    """This process's session for the model ``sha256`` (``payload``: a broadcast of its bytes)."""
    model = _SESSIONS.get(sha256)
    if model is None:
        from mlflywheel.services.runtime import OnnxModel

        path = Path(tempfile.gettempdir()) / f"flywheel-{sha256[:32]}.onnx"
        if not path.is_file():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".flywheel-", suffix=".onnx")
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload.value)
            os.replace(tmp, path)
        model = OnnxModel(path, expected_sha256=sha256, providers=providers, intra_op_threads=1)
        _SESSIONS[sha256] = model
    return model


def make_scorer(*, sha256: str, payload: Any, providers: list[str], keep: list[str], threshold: float,
                unseen: dict[str, Any], rejected: Any, checksum: Any,
                version: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function: ``keep`` columns plus ``score`` and ``decision`` for valid rows.

    Args:
        sha256: the model's recorded hash.
        payload: broadcast of the ONNX bytes.
        providers: execution providers in order of preference.
        keep: input columns copied to the output (id, entity, timestamp).
        threshold: decision threshold on the score.
        unseen: accumulator per categorical column, counting categories the model never saw.
        rejected: accumulator counting rows whose ``_valid`` is false (not scored, not output).
        checksum: accumulator summing a 64-bit hash of each output row (order-independent).
        version: the model version, part of each row's hash.
    """

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np
        import pandas as pd

        model = worker_model(sha256, payload, providers)
        for frame in batches:
            valid = frame.pop("_valid").to_numpy(dtype=bool)
            if not valid.all():
                rejected.add(int((~valid).sum()))
                frame = frame[valid]
            if frame.empty:
                continue
            scores = model.predict_proba(frame)
            for column, count in model.last_unseen.items():
                if column in unseen:
                    unseen[column].add(count)
            out = frame[keep].copy()
            out["score"] = scores
            out["decision"] = (scores >= threshold).astype(np.int8)
            hashed = pd.util.hash_pandas_object(out.assign(model_version=version), index=False)
            checksum.add(int(hashed.to_numpy().sum(dtype=np.uint64)))
            yield out

    return score
