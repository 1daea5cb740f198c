"""Model metrics: what the gate, training and the drift monitor's live check compute from scores and labels."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Ranking, calibration and thresholded metrics for a binary classifier."""
    import numpy as np
    from sklearn import metrics as m

    pred = (proba >= threshold).astype(int)
    clipped = np.clip(proba, 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(m.roc_auc_score(y_true, proba)),
        "pr_auc": float(m.average_precision_score(y_true, proba)),
        "log_loss": float(m.log_loss(y_true, clipped, labels=[0, 1])),
        "brier": float(m.brier_score_loss(y_true, proba)),
        "accuracy": float(m.accuracy_score(y_true, pred)),
        "precision": float(m.precision_score(y_true, pred, zero_division=0)),
        "recall": float(m.recall_score(y_true, pred, zero_division=0)),
        "f1": float(m.f1_score(y_true, pred, zero_division=0)),
    }
