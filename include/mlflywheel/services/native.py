"""Native (scikit-learn) models, unpickled only when they are byte for byte what training logged.

MLflow's sklearn flavor stores a model as a pickle, and unpickling runs code. ``train`` records
the SHA-256 of the pickle it logged as a run tag (:data:`~mlflywheel.services.names.TAG_MODEL_SHA256`);
:func:`load_native` downloads the file, checks the digest against that tag, and only then
unpickles the checked bytes. A file without a recorded digest, or one that changed since, is
refused with :class:`~mlflywheel.services.errors.ModelIntegrityError`. The gate, the exporter's
parity check and the benchmark load native models through here; serving never does (ONNX only).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import ModelIntegrityError
from mlflywheel.services.names import TAG_MODEL_SHA256

if TYPE_CHECKING:
    from mlflywheel.services.settings import Workspace

#: the file MLflow's sklearn flavor writes (its MLmodel's ``pickled_model``)
PICKLE = "model.pkl"


def _download(ws: Workspace, model_uri: str, folder: Path) -> bytes:
    """The pickle's bytes; a ``models:/`` URI is resolved to the artifact folder it names first."""
    import mlflow
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    from mlflywheel.services import tracking

    with tracking.active(ws):
        root = model_uri
        if model_uri.startswith("models:/"):
            root = str(ModelsArtifactRepository.get_underlying_uri(model_uri))  # type: ignore[no-untyped-call]  # MLflow: unannotated
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{root.rstrip('/')}/{PICKLE}", dst_path=str(folder))
    return Path(path).read_bytes()


def record_digest(ws: Workspace, run_id: str, model_uri: str) -> str:
    """Tag the run with the SHA-256 of the pickle just logged at ``model_uri``; returns the digest."""
    from mlflywheel.services import tracking

    with tempfile.TemporaryDirectory(prefix="flywheel-native-") as tmp:
        digest = hashlib.sha256(_download(ws, model_uri, Path(tmp))).hexdigest()
    tracking.client(ws).set_tag(run_id, TAG_MODEL_SHA256, digest)
    return digest


def load_native(ws: Workspace, model_uri: str, *, run_id: str) -> Any:
    """The estimator logged at ``model_uri`` by run ``run_id``, after checking its recorded SHA-256.

    Raises:
        ModelIntegrityError: the run records no digest, or the file's digest differs from it.
    """
    import pickle

    from mlflywheel.services import tracking

    expected = tracking.client(ws).get_run(run_id).data.tags.get(TAG_MODEL_SHA256)
    if not expected:
        raise ModelIntegrityError(f"{model_uri}: run {run_id} records no {TAG_MODEL_SHA256}; refusing to unpickle "
                                  "a model whose bytes nobody vouched for (retrain it with this version)")
    with tempfile.TemporaryDirectory(prefix="flywheel-native-") as tmp:
        data = _download(ws, model_uri, Path(tmp))
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise ModelIntegrityError(f"{model_uri}/{PICKLE}: SHA-256 is {found}, run {run_id} recorded {expected}; "
                                  "refusing to unpickle an altered file")
    return pickle.loads(data)  # noqa: S301 (the bytes are the ones training logged, checked above)


def load_native_version(ws: Workspace, name: str, version: str) -> Any:
    """The native model of a registered version (its logged model, checked against its run's digest)."""
    from mlflywheel.services import tracking
    from mlflywheel.services.served import model_id

    mv = tracking.client(ws).get_model_version(name, str(version))
    if not mv.run_id:
        raise ModelIntegrityError(f"{name} v{version} has no source run, so no recorded digest; refusing to unpickle")
    return load_native(ws, f"models:/{model_id(mv)}", run_id=str(mv.run_id))
