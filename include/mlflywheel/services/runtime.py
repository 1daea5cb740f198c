"""OnnxModel: the one way any stage runs an exported model.

Serving, Spark batch scoring, the benchmark and the parity check all score through this
class. It verifies the file before loading it (SHA-256 against the recorded value, no
external data outside the model's folder), picks execution providers from a preference
list and reports the one it actually got (onnxruntime-gpu silently falls back to CPU),
checks every batch against the model's input schema, and counts categories the model
never saw instead of letting them become all-zero one-hot rows unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import ConfigError, ModelIntegrityError, SchemaMismatch
from mlflywheel.services.names import META_CATEGORIES, PROBABILITIES

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_providers(preference: Sequence[str]) -> list[str]:
    """The available providers from ``preference``, in order; unknown names are an error."""
    import onnxruntime as ort

    known = set(ort.get_all_providers())
    unknown = [p for p in preference if p not in known]
    if unknown:
        raise ConfigError(f"unknown execution provider(s) {unknown}; onnxruntime knows {sorted(known)}")
    available = set(ort.get_available_providers())
    if not gpu_driver_present():
        # onnxruntime-gpu lists these without a GPU, then fails to load them and falls back
        available -= {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    chosen = [p for p in preference if p in available]
    return chosen or ["CPUExecutionProvider"]


def gpu_driver_present() -> bool:
    """Whether the NVIDIA driver library can be loaded (a GPU provider can work at all)."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _check_external_data(model_path: Path) -> None:
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # truncated or not an ONNX file
        raise ModelIntegrityError(f"{model_path}: not a readable ONNX model: {exc}") from exc
    root = model_path.parent.resolve()
    for tensor in proto.graph.initializer:
        if uses_external_data(tensor):
            location = next(e.value for e in tensor.external_data if e.key == "location")
            target = (root / location).resolve()
            if root not in target.parents:
                raise ModelIntegrityError(f"{model_path}: initializer {tensor.name!r} reads external data from "
                                          f"{location!r}, outside the model folder {root}")


class OnnxModel:
    """An ONNX model ready to score pandas (or Arrow) batches of named feature columns.

    Args:
        path: the ``.onnx`` file.
        expected_sha256: the hash recorded on the model version; a mismatch refuses to load.
        providers: execution providers in order of preference.
        intra_op_threads: threads per session (1 for servers and Spark workers).
        graph_optimization: ``all``, ``extended``, ``basic`` or ``disabled``.
        io_binding_min_rows: batches at least this large use IO binding, which keeps
            outputs on the device until one copy back. Default: 4096 on a GPU provider,
            off on CPU. ORT cannot bind string tensors, so graphs with string inputs
            (one-hot inside the graph) always use a plain ``run``.
    """

    def __init__(self, path: str | Path, *, expected_sha256: str | None = None,
                 providers: Sequence[str] = DEFAULT_PROVIDERS, intra_op_threads: int = 1,
                 graph_optimization: str = "all", io_binding_min_rows: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise ModelIntegrityError(f"{self.path}: ONNX file missing or empty")
        self.sha256 = sha256_file(self.path)
        if expected_sha256 is not None and self.sha256 != expected_sha256:
            raise ModelIntegrityError(f"{self.path}: SHA-256 is {self.sha256}, the model version records "
                                      f"{expected_sha256}; refusing to load an altered file")
        _check_external_data(self.path)
        levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
        if graph_optimization not in levels:
            raise ConfigError(f"graph_optimization: expected one of {sorted(levels)}, found {graph_optimization!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = levels[graph_optimization]
        options.log_severity_level = 3
        requested = resolve_providers(providers)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=requested)
        except Exception as exc:
            raise ModelIntegrityError(f"{self.path}: onnxruntime could not load the model: {exc}") from exc
        self.providers: list[str] = self.session.get_providers()  # what we actually got, not what we asked for
        if self.providers[0] != requested[0]:
            log.warning("%s: asked for %s, running on %s", self.path.name, requested[0], self.providers[0])
        self.inputs = {i.name: i.type for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if PROBABILITIES not in outputs:
            raise SchemaMismatch(f"{self.path}: expected an output named {PROBABILITIES!r}, found {outputs}")
        meta = self.session.get_modelmeta().custom_metadata_map
        self.categories: dict[str, set[str]] = {k: set(v)
                                                 for k, v in json.loads(meta.get(META_CATEGORIES, "{}")).items()}
        unsupported = {n: t for n, t in self.inputs.items() if t not in ("tensor(string)", "tensor(float)")}
        if unsupported:
            raise SchemaMismatch(f"{self.path}: inputs must be tensor(string) or tensor(float), found {unsupported}")
        self._strings = [n for n, t in self.inputs.items() if t == "tensor(string)"]
        self._numbers = [n for n, t in self.inputs.items() if t == "tensor(float)"]
        on_gpu = self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        bindable = all(t != "tensor(string)" for t in self.inputs.values())
        if io_binding_min_rows is None:
            io_binding_min_rows = 4096 if on_gpu else 0
        self.io_binding_min_rows = io_binding_min_rows if bindable and io_binding_min_rows > 0 else None
        self.last_unseen: dict[str, int] = {}
        #: the columns object seen last and the numeric inputs' positions in it (``None``: by name)
        self._layout: tuple[Any, list[int] | None] = (None, None)

    @property
    def provider(self) -> str:
        return self.providers[0]

    @property
    def input_schema(self) -> dict[str, str]:
        return dict(self.inputs)

    def _require(self, columns: Any) -> None:
        missing = [name for name in self.inputs if name not in columns]
        if missing:
            raise SchemaMismatch(f"batch lacks column(s) {missing}; the model {self.path.name} expects "
                                 f"{list(self.inputs)}")

    def _numeric_positions(self, frame: Any) -> list[int] | None:
        """Check ``frame`` has every input; the numeric inputs' column positions (``None``: look up by name).

        Kept for the last columns object seen: the batches of one job, or the rows of one request
        shape, pay for the lookup once.
        """
        columns = frame.columns
        seen, positions = self._layout
        if columns is seen:
            return positions
        self._require(columns)
        if not columns.is_unique:
            doubled = sorted({str(c) for c in columns[columns.duplicated()]} & set(self.inputs))
            if doubled:
                raise SchemaMismatch(f"batch has column(s) {doubled} more than once; the model {self.path.name} "
                                     "takes each input once")
        positions = None
        if hasattr(frame, "_get_column_array") and columns.is_unique:  # a pandas without it: by name
            where = {name: i for i, name in enumerate(columns)}
            positions = [where[name] for name in self._numbers]
        self._layout = (columns, positions)
        return positions

    def feed(self, batch: Any) -> dict[str, np.ndarray]:
        """Check ``batch`` against the inputs and build the ORT feed (also counts unseen categories).

        Works on numpy arrays column by column: pandas-level conversions cost more than the
        model itself on a single row.
        """
        import numpy as np
        import pandas as pd

        frame = batch if isinstance(batch, pd.DataFrame) else batch.to_pandas() if hasattr(batch, "to_pandas") \
            else batch
        if isinstance(frame, pd.DataFrame):
            positions = self._numeric_positions(frame)
        else:  # a DataFrame-like (the server's Columns): by name, checked on every call
            self._require(frame.columns)
            positions = None
        feed: dict[str, np.ndarray] = {}
        unseen: dict[str, int] = {}
        for name in self._strings:
            column = frame[name]
            dtype = column.dtype
            if dtype.kind != "O" and not isinstance(dtype, (pd.StringDtype, pd.CategoricalDtype)):
                raise SchemaMismatch(f"column {name!r}: expected strings, found dtype {dtype}")
            values = column.to_numpy()
            inferred = pd.api.types.infer_dtype(values, skipna=False)
            if inferred in ("integer", "floating", "mixed-integer-float", "decimal", "boolean"):
                raise SchemaMismatch(f"column {name!r}: expected strings, found {inferred} values")
            if values.dtype != object or inferred != "string":
                values = values.astype(str).astype(object)
            known = self.categories.get(name)
            if known is not None and not known.issuperset(values):  # the common case costs one pass
                unseen[name] = sum(1 for v in values if v not in known)
            feed[name] = values.reshape(-1, 1)
        for i, name in enumerate(self._numbers):
            # a DataFrame's column values without building a Series: a Series costs more than the
            # trees on a single row once a model has tens of numeric inputs
            column = frame._get_column_array(positions[i]) if positions is not None else frame[name]
            dtype = column.dtype
            if dtype.kind not in "iuf":
                raise SchemaMismatch(f"column {name!r}: expected a number, found dtype {dtype}")
            if isinstance(column, np.ndarray):
                values = column.astype(np.float32, copy=False)
            elif isinstance(dtype, np.dtype):
                values = column.to_numpy().astype(np.float32, copy=False)
            else:  # pandas extension dtypes (nullable Int64, Float64): NA becomes NaN
                values = column.to_numpy(dtype=np.float32, na_value=np.nan)
            feed[name] = values.reshape(-1, 1)
        self.last_unseen = unseen
        if unseen:
            log.warning("%s: categories the model never saw (scored as 'unknown'): %s", self.path.name, unseen)
        return feed

    def predict_proba(self, batch: Any) -> np.ndarray:
        """Probability of the positive class for each row of ``batch``."""
        import numpy as np

        feed = self.feed(batch)
        rows = len(next(iter(feed.values()))) if feed else 0
        if self.io_binding_min_rows is not None and rows >= self.io_binding_min_rows:
            binding = self.session.io_binding()
            for name, values in feed.items():
                binding.bind_cpu_input(name, values)
            binding.bind_output(PROBABILITIES)
            self.session.run_with_iobinding(binding)
            proba = binding.copy_outputs_to_cpu()[0]
        else:
            proba = self.session.run([PROBABILITIES], feed)[0]
        return np.asarray(proba[:, 1], dtype=np.float64)
