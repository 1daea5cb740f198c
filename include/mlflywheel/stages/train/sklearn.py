"""scikit-learn trainers: preprocessing and model in one ``Pipeline``.

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


def build(spec: TrainingSpec) -> Pipeline | Any:
    """The estimator named by ``spec.trainer`` with ``spec.params`` and ``spec.seed``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    params: dict[str, Any] = dict(spec.params)
    if spec.trainer == "torch_mlp":
        from mlflywheel.stages.train.torch_mlp import TorchTabularClassifier

        try:
            return TorchTabularClassifier(categorical=tuple(spec.categorical), numeric=tuple(spec.numeric),
                                          seed=spec.seed, **params)
        except TypeError as exc:
            raise ConfigError(f"training.params: TorchTabularClassifier rejected {params}: {exc}") from exc
    if spec.trainer == "sklearn_hgb":
        numeric = SimpleImputer(strategy="median", keep_empty_features=True)
        model_cls, defaults = HistGradientBoostingClassifier, {"random_state": spec.seed, "early_stopping": False}
    elif spec.trainer == "sklearn_logreg":
        numeric = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                            ("scale", StandardScaler())])
        model_cls, defaults = LogisticRegression, {"random_state": spec.seed, "max_iter": 1000}
    else:  # the config's Literal makes this unreachable; kept for callers that bypass it
        raise ConfigError(f"training.trainer: unknown trainer {spec.trainer!r}")
    try:
        model = model_cls(**{**defaults, **params})
    except TypeError as exc:
        raise ConfigError(f"training.params: {model_cls.__name__} rejected {params}: {exc}") from exc
    transformers = []
    if spec.categorical:
        transformers.append(("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                             list(spec.categorical)))
    if spec.numeric:
        transformers.append(("numeric", numeric, list(spec.numeric)))
    return Pipeline([("preprocess", ColumnTransformer(transformers, remainder="drop")), ("model", model)])
