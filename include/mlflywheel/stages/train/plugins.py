"""Finding a trainer by name, import path or entry point, and calling it under the contract.

Every failure is a :class:`~mlflywheel.services.errors.TrainerError` that names the pipeline,
the trainer reference and what was wrong, raised before any MLflow run starts.
"""

from __future__ import annotations

import importlib
import re
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import TrainerError
from mlflywheel.stages.train.contract import ENTRY_POINT_GROUP, Trainer, TrainingData

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig

#: built-in trainers: short name -> import path
BUILTIN = {
    "sklearn_hgb": "mlflywheel.stages.train.sklearn:hgb",
    "sklearn_logreg": "mlflywheel.stages.train.sklearn:logreg",
    "torch_mlp": "mlflywheel.stages.train.sklearn:torch_mlp",
    "xgboost": "mlflywheel.stages.train.sklearn:xgboost",
    "lightgbm": "mlflywheel.stages.train.sklearn:lightgbm",
}
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _import(reference: str, path: str, pipeline: str) -> Trainer:
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TrainerError(f"pipeline {pipeline}: trainer {reference!r}: module {module_name!r} cannot be imported "
                           f"({type(exc).__name__}: {exc})") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise TrainerError(f"pipeline {pipeline}: trainer {reference!r}: {module_name} has no attribute "
                               f"{attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TrainerError(f"pipeline {pipeline}: trainer {reference!r}: {path} is a {type(target).__name__}, "
                           "not a function taking TrainingData")
    return target  # type: ignore[no-any-return]  # checked callable; the contract is documented


def resolve(reference: str, pipeline: str) -> Trainer:
    """The trainer named by ``reference``: a built-in name, ``module:function``, or an entry point."""
    if reference in BUILTIN:
        return _import(reference, BUILTIN[reference], pipeline)
    if IMPORT_PATH.match(reference):
        return _import(reference, reference, pipeline)
    found = entry_points(group=ENTRY_POINT_GROUP, name=reference)
    if not found:
        installed = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise TrainerError(f"pipeline {pipeline}: trainer {reference!r} is not a built-in ({sorted(BUILTIN)}), "
                           f"not an import path (module:function) and not an installed {ENTRY_POINT_GROUP} "
                           f"entry point ({installed or 'none installed'})")
    [entry] = list(found)[:1]
    return _import(reference, entry.value, pipeline)


def fit(config: PipelineConfig, data: TrainingData) -> Any:
    """Resolve ``training.trainer``, call it, and check what it returned against the contract."""
    reference = config.training.trainer
    trainer = resolve(reference, config.name)
    try:
        model = trainer(data)
    except TrainerError:
        raise
    except Exception as exc:
        raise TrainerError(f"pipeline {config.name}: trainer {reference!r} raised while fitting: "
                           f"{type(exc).__name__}: {exc}") from exc
    if model is None or not callable(getattr(model, "predict_proba", None)):
        raise TrainerError(f"pipeline {config.name}: trainer {reference!r} returned {type(model).__name__}, expected "
                           "a fitted estimator with predict_proba (see mlflywheel.stages.train.contract)")
    try:
        proba = model.predict_proba(data.x_val.head(5))
    except Exception as exc:
        raise TrainerError(f"pipeline {config.name}: trainer {reference!r} returned a model whose predict_proba "
                           f"fails on the holdout's columns: {type(exc).__name__}: {exc}") from exc
    if getattr(proba, "ndim", 0) != 2 or proba.shape[1] < 2:
        raise TrainerError(f"pipeline {config.name}: trainer {reference!r}: predict_proba returned shape "
                           f"{getattr(proba, 'shape', None)}, expected (rows, classes) with at least two classes")
    return model
