"""The online model server (``flywheel serve``): ONNX only, through :class:`~mlflywheel.services.runtime.OnnxModel`.

Modules, one job each:

- :mod:`.routing`: which alias answers an entity (canary weight, shadow, A/B); pure, shared
  with the rollout controller.
- :mod:`.contract`: strict request parsing and validation (4xx with ``{code, field, message}``).
- :mod:`.predlog`: the prediction log (SQLite WAL, deduplicated by request id) and its reader.
- :mod:`.models`: follows ``@champion`` / ``@canary`` / ``@challenger`` in the registry and
  hot-reloads hash-checked versions.
- :mod:`.online`: the Feast online-store lookup with a short TTL cache.
- :mod:`.batching`: dynamic micro-batching with a bounded queue.
- :mod:`.metrics`: Prometheus metrics.
- :mod:`.app`: the ASGI app (Open Inference Protocol v2 plus ``/predict``) and :func:`.app.serve`.
"""
