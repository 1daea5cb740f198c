"""Drift statistics on 200k vs 200k rows x 22 columns: ours vs Evidently's DataDriftPreset, same data.

Each side runs in its own subprocess, so its peak RSS is its own: the child reads the same
two Parquet files, computes, and reports the import time, the compute time (median of
``--repeat`` runs after one warm-up) and ``ru_maxrss``. Ours is ``drift.stats.compare_frames``
with Evidently's default methods and thresholds (normalized Wasserstein >= 0.1 for numeric,
Jensen-Shannon >= 0.1 for categorical); Evidently is ``Report([DataDriftPreset()]).run()``
with its defaults. The verdicts on drifted columns must be identical.

Writes bench/results/drift_vs_evidently.json and prints a table.

Usage: .venv/bin/python bench/drift_vs_evidently.py [--rows 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "drift_vs_evidently.json"
NUMERIC = [f"num_{i:02d}" for i in range(16)]
CATEGORICAL = [f"cat_{i}" for i in range(6)]
#: the columns the current side shifts (on purpose well past both tools' thresholds)
SHIFTED = {"num_00", "num_03", "num_07", "num_12", "cat_1", "cat_4"}
OURS, EVIDENTLY = "ours (numpy/scipy, drift.stats)", "evidently 0.7 DataDriftPreset"


def make_data(rows: int, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Reference and current frames (seeded); the ``SHIFTED`` columns move in the current one."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    levels = [list("abcdefgh"), ["pos", "online", "mobile"], [f"c{i}" for i in range(20)]]

    def frame(shift: bool) -> pd.DataFrame:
        cols = {}
        for i, name in enumerate(NUMERIC):
            moved = shift and name in SHIFTED
            if i % 3 == 0:
                cols[name] = rng.lognormal(3.6 + (0.4 if moved else 0), 0.6, rows)
            elif i % 3 == 1:
                cols[name] = rng.normal(0 + (0.5 if moved else 0), 1, rows)
            else:
                cols[name] = rng.gamma(2 * (1.5 if moved else 1), 10, rows)
        for i, name in enumerate(CATEGORICAL):
            values = levels[i % 3]
            p = np.linspace(1, 2, len(values))
            if shift and name in SHIFTED:
                p = p[::-1] ** 3
            cols[name] = rng.choice(values, rows, p=p / p.sum())
        return pd.DataFrame(cols)

    ref, cur = folder / "reference.parquet", folder / "current.parquet"
    frame(False).to_parquet(ref)
    frame(True).to_parquet(cur)
    return ref, cur


def _ours(reference, current) -> list[str]:
    from mlflywheel.services.config import FeatureDriftLimits
    from mlflywheel.stages.drift_check.stats import compare_frames

    # Evidently's defaults: Wasserstein (normed) 0.1, JS 0.1; no PSI or unseen-category rule
    limits = FeatureDriftLimits(wasserstein=0.1, jensen_shannon=0.1, psi=1e9, max_unseen_share=1.0)
    result = compare_frames(reference, current, numeric=NUMERIC, categorical=CATEGORICAL, limits=limits)
    return sorted(c.column for c in result if c.drifted)


def _evidently(reference, current) -> list[str]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from mlflywheel.stages.drift_check.report import evidently_drift

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition))
    return evidently_drift(snapshot.dict())["drifted"]


def worker(side: str, ref: str, cur: str, repeat: int) -> dict:
    """Run one side in this process; print and return its numbers."""
    started = time.perf_counter()
    import pandas as pd

    if side == "ours":
        import mlflywheel.stages.drift_check.stats  # noqa: F401
        func = _ours
    else:
        import evidently.presets  # noqa: F401
        func = _evidently
    imported = time.perf_counter() - started
    reference, current = pd.read_parquet(ref), pd.read_parquet(cur)
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    drifted = func(reference, current)  # warm-up (first-call imports, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        drifted = func(reference, current)
        times.append(time.perf_counter() - t0)
    return {"import_s": round(imported, 3), "compute_s": round(statistics.median(times), 3),
            "compute_runs_s": [round(t, 3) for t in times], "peak_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_after_load_mb": round(loaded_rss / 1024, 1), "drifted": drifted}


def _child(side: str, ref: Path, cur: Path, repeat: int) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, __file__, "--worker", side, "--ref", str(ref), "--cur", str(cur),
                           "--repeat", str(repeat)], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", choices=["ours", "evidently"])
    parser.add_argument("--ref")
    parser.add_argument("--cur")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.ref, args.cur, args.repeat)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        ref, cur = make_data(args.rows, Path(tmp))
        results = {OURS: _child("ours", ref, cur, args.repeat), EVIDENTLY: _child("evidently", ref, cur, args.repeat)}
    ours, theirs = results[OURS], results[EVIDENTLY]
    summary = {
        "rows_per_side": args.rows, "columns": len(NUMERIC) + len(CATEGORICAL), "numeric": len(NUMERIC),
        "categorical": len(CATEGORICAL), "shifted": sorted(SHIFTED), "repeat": args.repeat,
        "cpu_count": os.cpu_count(), "results": results,
        "speedup_compute": round(theirs["compute_s"] / ours["compute_s"], 1),
        "speedup_with_import": round((theirs["compute_s"] + theirs["import_s"]) /
                                     (ours["compute_s"] + ours["import_s"]), 1),
        "same_verdicts": ours["drifted"] == theirs["drifted"],
        "verdicts_match_injected": ours["drifted"] == sorted(SHIFTED),
        "peak_rss_ratio": round(ours["peak_rss_mb"] / theirs["peak_rss_mb"], 2),
        "target": ">= 8x faster than Evidently, same verdicts, peak memory no higher",
    }
    summary["target_met"] = (summary["speedup_compute"] >= 8 and summary["same_verdicts"]
                             and ours["peak_rss_mb"] <= theirs["peak_rss_mb"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(summary, indent=2))
    print(f"drift statistics, {args.rows:,} vs {args.rows:,} rows x {summary['columns']} columns "
          f"(median of {args.repeat}, {os.cpu_count()} CPUs)")
    print(f"{'':34} {'compute s':>10} {'import s':>9} {'peak RSS MB':>12}  drifted")
    for name, r in results.items():
        print(f"{name:34} {r['compute_s']:>10.3f} {r['import_s']:>9.2f} {r['peak_rss_mb']:>12.0f}  {r['drifted']}")
    print(f"speedup {summary['speedup_compute']}x (compute), {summary['speedup_with_import']}x (with import); "
          f"same verdicts: {summary['same_verdicts']}; peak RSS ours/evidently {summary['peak_rss_ratio']}; "
          f"target met: {summary['target_met']}")
    print(f"-> {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
