"""Hooks: connections to MLflow and the Feast repo. Each falls back to the embedded default."""

from mlflywheel_airflow.hooks.feast import FeastHook
from mlflywheel_airflow.hooks.mlflow import MlflowHook

__all__ = ["FeastHook", "MlflowHook"]
