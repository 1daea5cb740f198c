"""Trainers. Each builds an estimator from the pipeline config; :func:`train` tracks it in MLflow."""

from mlflywheel.stages.train.core import holdout_split, train

__all__ = ["holdout_split", "train"]
