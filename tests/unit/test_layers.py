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
LAZY_ONLY = {"include/mlflywheel/stages/train/torch_mlp.py"}


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


# --- the layers of include/mlflywheel (docs/DESIGN.md, "Layout") ----------------------------
PACKAGE = ROOT / "include" / "mlflywheel"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at the top or inside a function."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                bases = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                bases = [a.name for a in node.names]
            else:
                continue
            targets |= {b for b in bases if b in modules and b != name}
        graph[name] = targets - {"mlflywheel"}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _layer(module: str) -> str:
    """``services``, ``serving``, ``tools``, or ``stages.<task id>``."""
    parts = module.split(".")
    if len(parts) < 2:
        return "package"
    return f"stages.{parts[2]}" if parts[1] == "stages" and len(parts) > 2 else parts[1]


def _allowed(source: str, target: str) -> bool:
    """The direction of the map: tools -> stages / serving -> services; a stage stands on services only."""
    src, dst = _layer(source), _layer(target)
    if src == dst or dst in ("package", "services"):
        return True
    return src == "tools"


def test_the_package_import_graph_has_no_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_planted_cycle():
    graph = _graph()
    graph["mlflywheel.services.names"] = {"mlflywheel.services.config"}
    graph["mlflywheel.services.config"] |= {"mlflywheel.services.errors"}
    graph["mlflywheel.services.errors"] = {"mlflywheel.services.names"}
    assert ["mlflywheel.services.config", "mlflywheel.services.errors", "mlflywheel.services.names"] in _cycles(graph)


def test_every_import_goes_down_the_layers():
    """Services import services only; a stage, the server: services and themselves; tools: anything."""
    upward = [f"{source} imports {target}" for source, targets in sorted(_graph().items())
              for target in sorted(targets) if not _allowed(source, target)]
    assert upward == []


def test_the_layer_rule_refuses_a_stage_importing_another_stage():
    assert not _allowed("mlflywheel.stages.benchmark", "mlflywheel.stages.export_quantize")
    assert not _allowed("mlflywheel.services.served", "mlflywheel.serving.models")
    assert not _allowed("mlflywheel.serving.models", "mlflywheel.stages.export_quantize")
    assert _allowed("mlflywheel.stages.train.core", "mlflywheel.stages.train.sklearn")
    assert _allowed("mlflywheel.tools.cli", "mlflywheel.stages.validate")


def test_no_module_imports_another_modules_private_name():
    """A helper used across modules is a public, documented name (issue 16); ``_x`` stays in its module."""
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "plugins").rglob("*.py"), *(ROOT / "dags").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0].startswith("mlflywheel"):
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}"
                              for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []
