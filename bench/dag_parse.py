"""DAG parse time: mlflywheel's DAG file vs the same file with heavy top-level imports.

The DAG processor forks a child per file per loop with only ``airflow`` pre-imported, so
what a file costs is its own import work after ``import airflow``. Each measurement here
is a fresh interpreter that imports airflow (untimed), then times ``DagBag`` on one folder.

Scenarios, in one run on the same machine:
  light-1 / light-50   dags/flywheel_train.py with 1 and with 50 pipeline configs
  heavy-1 / heavy-50   the same file plus ``import mlflow, pandas, sklearn`` at module top
                       (what a DAG file that builds models at top level pays)

Usage: .venv/bin/python bench/dag_parse.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys, time
import airflow  # pre-imported by the DAG processor
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
print("RESULT", elapsed, len(bag.dags))
"""


def make_pipelines(folder: Path, count: int) -> None:
    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "fraud.yaml").read_text())
    for i in range(count):
        name = f"fraud_{i:03d}"
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({**raw, "name": name,
                                                             "registry": {"model_name": name}}))


def make_dag_folder(folder: Path, heavy: bool) -> None:
    text = (ROOT / "dags" / "flywheel_train.py").read_text()
    if heavy:
        text = text.replace("import pendulum\n", "import mlflow  # noqa\nimport pandas  # noqa\n"
                                                 "import sklearn.ensemble  # noqa\nimport pendulum\n", 1)
    (folder / "flywheel_train.py").write_text(text)


def measure(dag_folder: Path, pipelines: Path, repeat: int) -> tuple[list[float], int]:
    env = {**os.environ, "FLYWHEEL_PIPELINES_DIR": str(pipelines), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW_HOME": str(pipelines.parent / "airflow"), "FLYWHEEL_PROJECT_ROOT": str(ROOT)}
    times, dags = [], 0
    for _ in range(repeat + 1):  # the first run warms the OS page cache and is dropped
        stdout = subprocess.run([sys.executable, "-c", CHILD, str(dag_folder)], env=env, capture_output=True,
                                text=True, check=True).stdout
        _, elapsed, count = next(line for line in stdout.splitlines() if line.startswith("RESULT ")).split()
        times.append(float(elapsed))
        dags = int(count)
    return times[1:], dags


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for count in (1, 50):
            pipelines = tmp / f"pipelines-{count}"
            pipelines.mkdir()
            make_pipelines(pipelines, count)
            for heavy in (False, True):
                folder = tmp / f"dags-{count}-{'heavy' if heavy else 'light'}"
                folder.mkdir()
                make_dag_folder(folder, heavy)
                times, dags = measure(folder, pipelines, args.repeat)
                rows.append({"scenario": f"{'heavy' if heavy else 'light'}-{count}", "pipelines": count,
                             "dags": dags, "median_s": statistics.median(times), "min_s": min(times),
                             "max_s": max(times), "per_dag_ms": 1000 * statistics.median(times) / dags})
    print(f"DAG parse after `import airflow`, median of {args.repeat} fresh processes")
    print("| scenario | pipelines | DAGs | median s | min s | max s | ms per DAG |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['pipelines']} | {r['dags']} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
              f"{r['max_s']:.3f} | {r['per_dag_ms']:.1f} |")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "dag_parse.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
