"""The served-model API: what an alias serves, and its ONNX variant loaded and hash-checked.

The model server, Spark batch scoring, the drift monitor, the benchmark and ``flywheel infer``
all stand on these functions; none of them reaches into the exporter that wrote the files.

- :func:`resolve_alias`: ``<model>@<alias>`` -> version and the variant the benchmark chose.
- :func:`fetch_variant`: a version's published ONNX file, downloaded into a folder the caller owns.
- :func:`load_version`: an :class:`~mlflywheel.services.runtime.OnnxModel` for a version, with
  its download removed once ONNX Runtime holds the graph.
- :func:`check_inputs`: refuse a graph whose inputs are not the pipeline's features.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import ModelNotPublished, RegistryError, SchemaMismatch
from mlflywheel.services.names import TAG_ONNX, TAG_SERVE_VARIANT

if TYPE_CHECKING:
    from mlflywheel.services.runtime import OnnxModel
    from mlflywheel.services.settings import Workspace

DEFAULT_VARIANT = "onnx-fp32"


@dataclass(frozen=True)
class Served:
    """What ``<model>@<alias>`` serves: the version and the variant the benchmark chose."""

    name: str
    version: str
    run_id: str
    variant: str
    precision: str


def variant_precision(variant: str) -> str:
    """``onnx-int8@CPU`` -> ``int8``: the precision part of a ``flywheel.serve_variant`` value."""
    return variant.split("@")[0].removeprefix("onnx-")


def resolve_alias(ws: Workspace, name: str, alias: str) -> Served:
    """The version behind ``name@alias`` and its serving variant (``flywheel.serve_variant``).

    Raises:
        RegistryError: the model or the alias does not exist.
    """
    from mlflywheel.services import tracking
    from mlflywheel.services.registry import alias_version

    version = alias_version(tracking.client(ws), name, alias)
    if version is None:
        raise RegistryError(f"{name}@{alias} does not exist (registry {ws.registry_uri})")
    variant = version.tags.get(TAG_SERVE_VARIANT, DEFAULT_VARIANT)
    return Served(name=name, version=str(version.version), run_id=str(version.run_id or ""), variant=variant,
                  precision=variant_precision(variant))


def model_id(version: Any) -> str:
    """The logged-model id behind a model version (``m-...``).

    Raises:
        ModelNotPublished: the version was registered from something other than a logged model.
    """
    found = getattr(version, "model_id", None)
    if found:
        return str(found)
    if str(version.source).startswith("models:/m-"):
        return str(version.source).removeprefix("models:/")
    raise ModelNotPublished(f"model version {version.name} v{version.version} has no logged model "
                            f"(source {version.source})")


def fetch_variant(ws: Workspace, name: str, version: str, precision: str, dst: Path) -> tuple[Path, str]:
    """Download a version's published ONNX variant into ``dst``; returns the file and its recorded SHA-256.

    The caller owns ``dst`` (and removes it); the hash is checked by whoever opens the file.

    Raises:
        ModelNotPublished: the version has no published variant of that precision.
    """
    import mlflow

    from mlflywheel.services import tracking

    client = tracking.client(ws)
    mv = client.get_model_version(name, version)
    prefix = f"{TAG_ONNX}.{precision}"
    if mv.tags.get(f"{prefix}.published") != "true":
        raise ModelNotPublished(f"{name} v{version} has no published {precision} ONNX variant "
                                f"({mv.tags.get(f'{prefix}.reason', 'not exported yet')})")
    location = client.get_logged_model(model_id(mv)).artifact_location.rstrip("/")
    with tracking.active(ws):
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{mv.tags[f'{prefix}.path']}",
                                                   dst_path=str(dst))
    return Path(path), mv.tags[f"{prefix}.sha256"]


def load_version(ws: Workspace, name: str, version: str, *, precision: str = "fp32",
                 expected_features: list[str] | None = None, **options: Any) -> OnnxModel:
    """An :class:`OnnxModel` for a registered version's published variant, hash-checked.

    The file is downloaded to a temporary folder that is removed before returning: ONNX
    Runtime holds the graph in memory once its session exists. With ``expected_features``
    (the pipeline's model inputs), a graph whose inputs differ is refused, naming both lists.
    """
    from mlflywheel.services.runtime import OnnxModel

    with tempfile.TemporaryDirectory(prefix="flywheel-onnx-") as tmp:
        path, sha256 = fetch_variant(ws, name, version, precision, Path(tmp))
        model = OnnxModel(path, expected_sha256=sha256, **options)
    check_inputs(model, expected_features, f"{name} v{version} ({precision})")
    return model


def check_inputs(model: OnnxModel, expected: list[str] | None, what: str) -> None:
    """Refuse a graph whose inputs are not the pipeline's features (order does not matter)."""
    if expected is not None and sorted(model.inputs) != sorted(expected):
        raise SchemaMismatch(f"{what}: the ONNX graph takes {sorted(model.inputs)} but the pipeline's features are "
                             f"{sorted(expected)} (missing {sorted(set(expected) - set(model.inputs))}, "
                             f"extra {sorted(set(model.inputs) - set(expected))})")
