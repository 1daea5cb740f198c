"""Expectation suites: the JSON files under ``expectations/`` that ``validate``, the model server and
``flywheel check`` read the same way (GX 1.x ``ExpectationSuite`` form:
``{"name": ..., "expectations": [{"type": ..., "kwargs": {...}}]}``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflywheel.services.errors import ConfigError


def load_suite(expectations_dir: Path, name: str) -> dict[str, Any]:
    """Read ``<expectations_dir>/<name>.json``.

    Raises:
        ConfigError: the file is missing, is not JSON, or has no ``expectations`` list.
    """
    path = Path(expectations_dir) / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"{path}: expectation suite {name!r} not found "
                          f"(validation.suite in the pipeline config)")
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list) or not suite["expectations"]:
        raise ConfigError(f"{path}: expected an object with a non-empty 'expectations' list")
    for i, exp in enumerate(suite["expectations"]):
        if not isinstance(exp, dict) or "type" not in exp or not isinstance(exp.get("kwargs", {}), dict):
            raise ConfigError(f"{path}: expectations[{i}] needs a 'type' and a 'kwargs' object, found {exp!r}")
    suite.setdefault("name", name)
    return suite
