"""Fixtures shared by the unit tests: an in-process model server of the CTR test models."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import helpers


@pytest.fixture
def serve_ctr(ctr_onnx: SimpleNamespace, tmp_path: Path):
    """``serve_ctr(**options)``: a context manager for a server of the CTR models (see helpers.running_server)."""
    return lambda **options: helpers.running_server(ctr_onnx, tmp_path / "predictions.db", **options)
