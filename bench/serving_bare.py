"""The floor for a Python model server: FastAPI + one ONNX Runtime session, nothing else.

No routing, no prediction log, no metrics, no validation beyond what FastAPI does: records
in, scores out. ``bench/serving_vs_mlflow.py`` runs it as ``uvicorn serving_bare:app`` with
``FLYWHEEL_BENCH_ONNX`` pointing at the model.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(os.environ["FLYWHEEL_BENCH_ONNX"], sess_options=options,
                               providers=["CPUExecutionProvider"])
INPUTS = {i.name: i.type for i in session.get_inputs()}
app = FastAPI()


@app.post("/predict")
async def predict(body: dict[str, Any]) -> dict[str, Any]:
    records = body["records"]
    feed = {}
    for name, kind in INPUTS.items():
        values = [r.get(name) for r in records]
        if kind == "tensor(string)":
            feed[name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            feed[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float32).reshape(-1, 1)
    proba = session.run(["probabilities"], feed)[0]
    return {"scores": proba[:, 1].tolist()}
