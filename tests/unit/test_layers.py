"""House rules that code can check: layer direction and cheap DAG parsing."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "numpy", "mlflow", "feast", "great_expectations", "evidently", "torch", "pyspark",
         "onnxruntime", "onnx", "sklearn", "skl2onnx")
pytestmark = pytest.mark.unit


def _imports(path: Path, top_level_only: bool) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_core_never_imports_airflow_or_plugins():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in (ROOT / "include" / "mlflywheel").rglob("*.py")
                 for line, name in _imports(path, top_level_only=False)
                 if name.split(".")[0] in ("airflow", "mlflywheel_airflow")]
    assert offenders == []


# Imported only inside functions that train with it: it must subclass sklearn's BaseEstimator.
LAZY_ONLY = {"include/mlflywheel/train/torch_mlp.py"}


@pytest.mark.parametrize("folder", ["dags", "plugins", "include/mlflywheel"])
def test_no_heavy_import_at_module_top(folder):
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in (ROOT / folder).rglob("*.py") if str(path.relative_to(ROOT)) not in LAZY_ONLY
                 for line, name in _imports(path, top_level_only=True)
                 if name.split(".")[0] in HEAVY]
    assert offenders == []


def test_lazy_only_modules_are_not_imported_at_module_top():
    importers = [f"{path.relative_to(ROOT)}:{line}" for path in ROOT.glob("**/*.py") if ".venv" not in path.parts
                 for line, name in _imports(path, top_level_only=True) if name == "mlflywheel.stages.train.torch_mlp"]
    assert importers == []


def test_parsing_the_dag_file_loads_no_heavy_library():
    code = ("import runpy, sys, json; runpy.run_path(sys.argv[1]); "
            f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "dags" / "flywheel_train.py")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
