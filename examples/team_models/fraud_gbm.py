"""A team's own fraud model, outside the mlflywheel package: what a notebook model becomes.

The pipeline YAML names it ``training.trainer: team_models.fraud_gbm:train`` (this folder's
parent on ``PYTHONPATH``, or the module in an installed package). mlflywheel calls ``train``
with a :class:`~mlflywheel.stages.train.contract.TrainingData` and takes it from there: the
MLflow run, the gate, registration, ONNX export with its parity check, serving, batch scoring.
"""

from __future__ import annotations

from typing import Any


def train(data: Any) -> Any:
    """A scikit-learn Pipeline with the team's own preprocessing and a gradient-boosted model.

    Rare merchant categories are folded into one column by the one-hot encoder
    (``min_frequency``); amounts are clipped outliers-first by a robust scaler; the model's
    size comes from ``training.params`` in the YAML.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, RobustScaler

    params = dict(data.params)
    preprocess = ColumnTransformer([
        ("categories", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20, sparse_output=False),
         list(data.categorical)),
        ("amounts", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                              ("scale", RobustScaler())]), list(data.numeric)),
    ])
    model = GradientBoostingClassifier(n_estimators=int(params.get("n_estimators", 80)),
                                       max_depth=int(params.get("max_depth", 3)),
                                       learning_rate=float(params.get("learning_rate", 0.1)),
                                       subsample=float(params.get("subsample", 1.0)),
                                       random_state=data.seed)
    return Pipeline([("preprocess", preprocess), ("model", model)]).fit(data.x, data.y)
