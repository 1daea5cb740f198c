"""Domain errors. Each names where the full result lives and summarises the top causes.

The Airflow layer turns deterministic ones (bad data, bad config, a gate that cannot be
evaluated) into failures without retries; transient I/O errors are left to retry.
"""

from __future__ import annotations

from typing import Any


class FlywheelError(Exception):
    """Base class for every mlflywheel error."""

    #: Deterministic: retrying the same input gives the same failure.
    deterministic: bool = True


class ConfigError(FlywheelError):
    """A pipeline config (or a file it names) is missing, malformed or inconsistent."""


class DataValidationError(FlywheelError):
    """Landing data broke its expectation suite; ``result_path`` holds the full result."""

    def __init__(self, message: str, *, result_path: str | None = None,
                 failures: list[dict[str, Any]] | None = None, run: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.result_path = result_path
        self.failures = failures or []
        #: the MLflow run holding the result (``run_id``, ``experiment_id``), when recorded
        self.run = run or {}


class DataNotFound(FlywheelError):
    """Landing data for the interval is not there (yet): late data is worth a retry."""

    deterministic = False


class FeatureError(FlywheelError):
    """Feature definitions and data disagree (missing view, column, or empty frame)."""


class GateMisconfigured(FlywheelError):
    """The gate cannot judge: no thresholds, or a metric that could not be computed."""


class RegistryError(FlywheelError):
    """The model registry is not in the state a step expects."""


class ModelIntegrityError(FlywheelError):
    """An exported model file is missing, truncated, altered, or points outside its folder."""


class SchemaMismatch(FlywheelError):
    """A batch or a model does not have the inputs the other expects."""


class ParityError(FlywheelError):
    """An exported model does not reproduce the native model within the configured limits."""


class DriftInputError(FlywheelError):
    """The drift monitor's inputs cannot be compared: a missing reference, column or label file."""


class ModelNotPublished(RegistryError):
    """A model version has no published artifact of the kind asked for (no logged model, no ONNX variant)."""


class TrainerError(FlywheelError):
    """A pipeline's trainer cannot be found, fails while fitting, or returns what the contract does not allow."""


class ExportError(FlywheelError):
    """A fitted model cannot be converted to the ONNX graph the pipeline serves."""
