"""Drift monitoring: statistics, the Evidently report, delayed-label metrics, the retrain decision.

* :mod:`.stats`: vectorized per-column statistics (PSI, KS, Wasserstein, chi-square, JS).
* :mod:`.inputs`: the reference snapshot, the current window (:class:`.inputs.CurrentSource`),
  the champion's scores.
* :mod:`.live`: live metrics on matured delayed labels vs the champion's gate baseline.
* :mod:`.policy`: triggers, cooldown, deduplication, the trigger ledger.
* :mod:`.report`: Evidently HTML, per-check history (Parquet) and its PNG.
* :mod:`.check`: :func:`.check.run_drift_check`, the one call the Airflow task makes.

Nothing here imports Airflow; Evidently, matplotlib, Feast and MLflow are imported lazily.
"""
