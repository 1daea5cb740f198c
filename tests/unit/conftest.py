"""Fixtures shared by the unit tests: small ONNX models and an in-process model server."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import helpers


@pytest.fixture(scope="session")
def ctr_onnx(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The CTR frame, its config, and two different fp32 ONNX models as versions "1" and "2"."""
    frame = helpers.ctr_frame()
    config, v1 = helpers.ctr_hgb(frame, max_iter=30)
    _, v2 = helpers.ctr_hgb(frame, max_iter=3)
    root = tmp_path_factory.mktemp("ctr-onnx")
    files = {"1": helpers.save_onnx(v1, config, root / "v1" / "model.onnx"),
             "2": helpers.save_onnx(v2, config, root / "v2" / "model.onnx")}
    return SimpleNamespace(frame=frame, config=config, files=files)


@pytest.fixture
def serve_ctr(ctr_onnx: SimpleNamespace, tmp_path: Path):
    """``serve_ctr(**options)``: a context manager for a server of the CTR models (see helpers.running_server)."""
    return lambda **options: helpers.running_server(ctr_onnx, tmp_path / "predictions.db", **options)
