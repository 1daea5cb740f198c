"""Batch scoring on Spark: the ``batch_score`` job (spark-submit entry point ``batch/job.py``).

``job.py`` reads the interval's rows, joins features point-in-time in Spark, quarantines
invalid rows, scores with the alias's ONNX model through :class:`~mlflywheel.services.runtime.OnnxModel`
(``score.py``, one session per Python worker) and publishes each day's partition atomically
with a manifest (``publish.py``). ``session.py`` holds the Spark settings that matter.
"""
