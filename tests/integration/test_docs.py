"""The runnable examples in docs/writing-dags.md, run in order on a copy of the project.

``bash`` blocks run in a shell in the copy (``set -e``), ``python``/``yaml`` blocks whose
first line is ``# file: PATH`` are written to PATH there first; ``text`` blocks are prose.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlflywheel.services.settings import project_root

pytestmark = pytest.mark.integration  # real CLI and pytest processes on a copy of the project
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(doc: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(doc.read_text())]


def test_writing_dags_guide_runs_as_written(tmp_path):
    root = project_root()
    doc = root / "docs" / "writing-dags.md"
    work = tmp_path / "project"
    for name in ("include/pipelines", "expectations", "feature_repo", "dags"):
        shutil.copytree(root / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "tests").mkdir()
    env = {**os.environ, "FLYWHEEL_PROJECT_ROOT": str(work), "FLYWHEEL_HOME": str(work / ".flywheel"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(root)}
    for key in ("FLYWHEEL_PIPELINES_DIR", "FLYWHEEL_EXPECTATIONS_DIR", "FLYWHEEL_FEATURE_REPO"):
        env.pop(key, None)
    ran = 0
    for kind, body in blocks(doc):
        if kind in ("python", "yaml") and body.startswith("# file: "):
            first, _, rest = body.partition("\n")
            target = work / first.removeprefix("# file: ").strip()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rest)
        elif kind == "bash":
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, (f"{doc} block failed:\n{body}\n--- stdout\n{done.stdout}"
                                          f"\n--- stderr\n{done.stderr}")
            ran += 1
        else:
            assert kind == "text", f"{doc}: a {kind!r} block is neither run nor marked text"
    assert ran >= 4
