"""The built-in trainers (``sklearn_hgb``, ``sklearn_logreg``, ``torch_mlp``, ``xgboost``, ``lightgbm``).

Each is preprocessing and model in one estimator.

Categoricals are one-hot encoded before the model (never native categorical splits, which
skl2onnx mis-converts), so the whole pipeline can later be exported to ONNX as one graph
that takes the raw feature columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import ConfigError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from mlflywheel.services.config import TrainingSpec
    from mlflywheel.stages.train.contract import TrainingData


def build(spec: TrainingSpec) -> Pipeline | Any:
    """The (unfitted) estimator of a built-in ``spec.trainer`` with ``spec.params`` and ``spec.seed``."""
    return _estimator(spec.trainer, categorical=tuple(spec.categorical), numeric=tuple(spec.numeric),
                      params=dict(spec.params), seed=spec.seed)


def hgb(data: TrainingData) -> Pipeline:
    """Built-in ``sklearn_hgb``: one-hot + median imputation + HistGradientBoostingClassifier."""
    return _fit(_estimator("sklearn_hgb", categorical=data.categorical, numeric=data.numeric,
                           params=dict(data.params), seed=data.seed), data)


def logreg(data: TrainingData) -> Pipeline:
    """Built-in ``sklearn_logreg``: one-hot + imputation + scaling + LogisticRegression."""
    return _fit(_estimator("sklearn_logreg", categorical=data.categorical, numeric=data.numeric,
                           params=dict(data.params), seed=data.seed), data)


def torch_mlp(data: TrainingData) -> Any:
    """Built-in ``torch_mlp``: embeddings + MLP, early stopping on the holdout."""
    estimator = _estimator("torch_mlp", categorical=data.categorical, numeric=data.numeric,
                           params=dict(data.params), seed=data.seed)
    return estimator.fit(data.x, data.y, X_val=data.x_val, y_val=data.y_val)


def xgboost(data: TrainingData) -> Pipeline:
    """Built-in ``xgboost``: one-hot categoricals, numerics as they are (XGBoost routes missing values
    itself), ``XGBClassifier`` (defaults: 200 trees of depth 6, ``tree_method=hist``)."""
    from xgboost import XGBClassifier

    defaults = {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.1, "tree_method": "hist",
                "random_state": data.seed, "n_jobs": 1}
    return _fit(_boosted(XGBClassifier, defaults, data), data)


def lightgbm(data: TrainingData) -> Pipeline:
    """Built-in ``lightgbm``: one-hot categoricals, numerics as they are, ``LGBMClassifier``
    (defaults: 200 trees, depth 6, 31 leaves, deterministic)."""
    from lightgbm import LGBMClassifier

    defaults = {"n_estimators": 200, "max_depth": 6, "num_leaves": 31, "learning_rate": 0.1,
                "random_state": data.seed, "deterministic": True, "n_jobs": 1, "verbose": -1}
    return _fit(_boosted(LGBMClassifier, defaults, data), data)


def _boosted(model_cls: Any, defaults: dict[str, Any], data: TrainingData) -> Pipeline:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    params = {**defaults, **data.params}
    try:
        model = model_cls(**params)
    except TypeError as exc:
        raise ConfigError(f"training.params: {model_cls.__name__} rejected {dict(data.params)}: {exc}") from exc
    transformers: list[tuple[str, Any, list[str]]] = []
    if data.categorical:
        transformers.append(("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                             list(data.categorical)))
    if data.numeric:
        transformers.append(("numeric", "passthrough", list(data.numeric)))
    return Pipeline([("preprocess", ColumnTransformer(transformers, remainder="drop")), ("model", model)])


def _fit(estimator: Any, data: TrainingData) -> Any:
    return estimator.fit(data.x, data.y)


def _estimator(trainer: str, *, categorical: tuple[str, ...], numeric: tuple[str, ...], params: dict[str, Any],
               seed: int) -> Pipeline | Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if trainer == "torch_mlp":
        from mlflywheel.stages.train.torch_mlp import TorchTabularClassifier

        try:
            return TorchTabularClassifier(categorical=categorical, numeric=numeric, seed=seed, **params)
        except TypeError as exc:
            raise ConfigError(f"training.params: TorchTabularClassifier rejected {params}: {exc}") from exc
    if trainer == "sklearn_hgb":
        numeric_steps: Any = SimpleImputer(strategy="median", keep_empty_features=True)
        model_cls, defaults = HistGradientBoostingClassifier, {"random_state": seed, "early_stopping": False}
    elif trainer == "sklearn_logreg":
        numeric_steps = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                  ("scale", StandardScaler())])
        model_cls, defaults = LogisticRegression, {"random_state": seed, "max_iter": 1000}
    else:
        raise ConfigError(f"training.trainer: {trainer!r} is not a built-in trainer (sklearn_hgb, sklearn_logreg, "
                          "torch_mlp)")
    try:
        model = model_cls(**{**defaults, **params})
    except TypeError as exc:
        raise ConfigError(f"training.params: {model_cls.__name__} rejected {params}: {exc}") from exc
    transformers = []
    if categorical:
        transformers.append(("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                             list(categorical)))
    if numeric:
        transformers.append(("numeric", numeric_steps, list(numeric)))
    return Pipeline([("preprocess", ColumnTransformer(transformers, remainder="drop")), ("model", model)])
