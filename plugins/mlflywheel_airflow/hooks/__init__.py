"""Hooks: connections to MLflow, the Feast repo and the model server. Each falls back to the embedded default."""

from mlflywheel_airflow.hooks.feast import FeastHook
from mlflywheel_airflow.hooks.mlflow import MlflowHook
from mlflywheel_airflow.hooks.model_server import ModelServerHook

__all__ = ["FeastHook", "MlflowHook", "ModelServerHook"]
