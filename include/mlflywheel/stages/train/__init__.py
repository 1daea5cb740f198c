"""The ``train`` stage: trainers build an estimator from the pipeline config; :func:`train` tracks it in MLflow."""

from mlflywheel.stages.train.core import train

__all__ = ["train"]
