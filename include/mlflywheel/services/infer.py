"""Score a Parquet dataset with a registered model alias through :class:`OnnxModel`.

GPU first (CUDA, IO binding for large numeric batches), CPU otherwise with a warning:
this never fails for want of a GPU. Output is one Parquet file written atomically, each
row carrying the model name, version, variant and the provider that scored it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import SchemaMismatch

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

log = logging.getLogger(__name__)
GPU_FIRST = ("CUDAExecutionProvider", "CPUExecutionProvider")


def score_parquet(config: PipelineConfig, ws: Workspace, *, alias: str, input_path: str | Path,
                  output_path: str | Path, batch_size: int = 65536,
                  providers: tuple[str, ...] = GPU_FIRST) -> dict[str, Any]:
    """Score every row of ``input_path`` with ``<model>@<alias>``; write ``output_path``.

    Raises:
        RegistryError: the alias does not exist or its version has no ONNX variant.
        SchemaMismatch: the dataset lacks a model input or has a wrong dtype (nothing written).
    """
    import pyarrow.parquet as pq

    from mlflywheel.services.data.io import write_parquet_atomic
    from mlflywheel.services.served import load_version, resolve_alias

    name = config.model_name
    served = resolve_alias(ws, name, alias)
    variant = served.variant
    model = load_version(ws, name, served.version, precision=served.precision, providers=list(providers),
                         intra_op_threads=0, expected_features=config.feature_columns)
    if model.provider == "CPUExecutionProvider" and providers[0] != "CPUExecutionProvider":
        log.warning("no GPU provider available: scoring %s on the CPU", input_path)
    source = pq.ParquetFile(str(input_path))
    missing = [c for c in model.inputs if c not in source.schema_arrow.names]
    if missing:
        raise SchemaMismatch(f"{input_path}: lacks model input column(s) {missing}; {name} v{served.version} "
                             f"expects {list(model.inputs)}")
    keep = [c for c in dict.fromkeys([config.data.id_column, config.data.entity, config.data.timestamp])
            if c in source.schema_arrow.names]
    parts: list[Any] = []
    unseen: dict[str, int] = {}
    started = time.perf_counter()
    for batch in source.iter_batches(batch_size=batch_size):
        frame = batch.to_pandas()
        scores = model.predict_proba(frame)
        for column, count in model.last_unseen.items():
            unseen[column] = unseen.get(column, 0) + count
        out = frame[keep].copy()
        out["score"] = scores
        out["decision"] = (scores >= config.gate.decision_threshold).astype("int8")
        parts.append(out)
    import pandas as pd

    result = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*keep, "score", "decision"])
    result["model_name"], result["model_version"] = name, served.version
    result["variant"], result["provider"] = variant, model.provider
    write_parquet_atomic(result, Path(output_path))
    seconds = time.perf_counter() - started
    summary = {"rows": len(result), "output_path": str(output_path), "model_name": name,
               "model_version": served.version, "variant": variant, "provider": model.provider,
               "unseen_categories": unseen, "seconds": round(seconds, 3),
               "rows_per_s": round(len(result) / seconds) if seconds and len(result) else 0}
    log.info("scored %s", summary)
    return summary
