"""The trainer contract: what a team's own model code receives and what it returns.

A trainer is a plain function::

    def train(data: TrainingData) -> estimator

It receives the training part of the snapshot (``data.x``: one column per model input, the
categoricals as strings and the numerics as float32, in the pipeline's order; ``data.y``: the
labels), the holdout for early stopping (``data.x_val``, ``data.y_val``; never for choosing
what to report: the gate scores the holdout itself), the pipeline's ``training.params`` and
``training.seed``. It returns a *fitted* estimator that scikit-learn could call:

- ``predict_proba(frame)`` returning one column per class (binary: two), for a DataFrame with
  the columns of ``data.x``;
- convertible to ONNX by skl2onnx as one graph from those raw columns (a scikit-learn
  ``Pipeline`` with its own preprocessing is; ``flywheel pipeline validate`` fits the trainer
  on a sample of the landing data and converts it, so a model that cannot be exported is
  refused before any run).

Nothing else: no MLflow calls (``train`` logs the run, the params, the model and its
digest), no file I/O. A pipeline names its trainer in ``training.trainer``:

- a built-in: ``sklearn_hgb``, ``sklearn_logreg``, ``torch_mlp``;
- an import path: ``my_team.models.churn:train``;
- an entry point of the group ``mlflywheel.trainers`` that an installed package declares
  (``[project.entry-points."mlflywheel.trainers"] churn = "my_team.models.churn:train"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: the entry-point group a package registers trainers in
ENTRY_POINT_GROUP = "mlflywheel.trainers"


@dataclass(frozen=True)
class TrainingData:
    """What a trainer gets (see the module docstring)."""

    pipeline: str
    x: pd.DataFrame
    y: np.ndarray
    x_val: pd.DataFrame
    y_val: np.ndarray
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    seed: int
    params: Mapping[str, Any] = field(default_factory=dict)
    task: str = "binary"


#: a trainer: fits and returns an estimator (see the module docstring)
Trainer = Callable[[TrainingData], Any]
