"""Native models are unpickled only when their bytes are the ones training logged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlflywheel.services.errors import ModelIntegrityError
from mlflywheel.services.names import TAG_MODEL_SHA256
from mlflywheel.services.native import PICKLE, load_native, record_digest
from mlflywheel.services.settings import Workspace

pytestmark = pytest.mark.unit


@pytest.fixture
def logged(tmp_path, pipeline_config):
    """A logistic regression logged with MLflow's sklearn flavor (cloudpickle, as train logs it)."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from mlflywheel.services import tracking

    ws = Workspace(home=tmp_path / "ws").ensure()
    config = pipeline_config("fraud")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
    model = LogisticRegression().fit(x, y)
    client = tracking.client(ws)
    with tracking.active(ws):
        with mlflow.start_run(experiment_id=tracking.experiment_id(client, ws, config)) as run:
            info = mlflow.sklearn.log_model(model, name="model",
                                            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    return ws, run.info.run_id, info.model_uri, model, x


def _stored_pickle(ws: Workspace) -> Path:
    [path] = [p for p in (ws.home / "mlflow").rglob(PICKLE)]
    return path


def test_a_recorded_model_loads_and_predicts_what_was_logged(logged):
    ws, run_id, uri, model, x = logged
    digest = record_digest(ws, run_id, uri)
    from mlflywheel.services import tracking

    assert tracking.client(ws).get_run(run_id).data.tags[TAG_MODEL_SHA256] == digest
    loaded = load_native(ws, uri, run_id=run_id)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_a_model_without_a_recorded_digest_is_refused(logged):
    ws, run_id, uri, _, _ = logged
    with pytest.raises(ModelIntegrityError, match=f"records no {TAG_MODEL_SHA256}; refusing to unpickle"):
        load_native(ws, uri, run_id=run_id)


def test_an_altered_pickle_is_refused_before_it_is_unpickled(logged, tmp_path):
    ws, run_id, uri, _, _ = logged
    record_digest(ws, run_id, uri)
    marker = tmp_path / "unpickled"
    stored = _stored_pickle(ws)
    import pickle

    class Payload:  # what a writer of the artifact store could plant: code that runs on unpickling
        def __reduce__(self):
            return (marker.write_text, ("ran",))

    stored.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelIntegrityError, match="SHA-256 is .* refusing to unpickle an altered file"):
        load_native(ws, uri, run_id=run_id)
    assert not marker.exists()
