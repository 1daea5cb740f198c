"""``make demo`` wall time after install, by stage: a cold workspace, then a warm re-run.

Cold: a new FLYWHEEL_HOME (Airflow DB migrate, sample data, the whole DAG). Warm: the same
workspace again (what a second ``make demo`` costs: data and DB reused, training and
registration found again by the run key). Stage times come from ``flywheel demo`` itself
(reports/demo/timings.json); task times from Airflow's own ``dags test`` log.

Usage: .venv/bin/python bench/demo_stages.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(home: Path) -> dict[str, float]:
    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
    env.pop("AIRFLOW_HOME", None)
    t = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("flywheel")), "demo"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    timings = json.loads((home / "reports" / "demo" / "timings.json").read_text())
    return {"wall_total": time.perf_counter() - t, **timings}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cold = run(Path(tmp))
        warm = run(Path(tmp))
    keys = list(dict.fromkeys([*cold, *warm]))
    print("| stage | cold s | warm s |")
    print("|---|---|---|")
    for key in keys:
        print(f"| {key} | {cold.get(key, float('nan')):.1f} | {warm.get(key, float('nan')):.1f} |")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "demo_stages.json").write_text(json.dumps({"cold": cold, "warm": warm}, indent=2))


if __name__ == "__main__":
    main()
