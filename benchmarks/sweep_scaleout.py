"""Scale-out of a sweep on the work pool: the same 4-cell sweep (object_me x resnet18 x {baseline,
visual} x seeds {0, 1}, tiny, params compute.threads 1) on 1 and on 2 workers, and the same cells by
a local `dvc repro`, on the loopback cluster of tests/cluster_support.py (PostgreSQL behind the
Prefect and MLflow servers, workers in their own clones, a shared DVC remote folder). Before each
sweep the DVC remote and every clone's cache are emptied, then the dataset is made once and pushed
(as it is after a project's first sweep): each sweep trains every cell, and what is timed is the
cells' fan-out, not each worker making the same data.

Prints one JSON object:
- speedup: wall time with 1 worker / with 2 workers (goal >= 1.8 on 2 cores, 1 thread per cell);
- overhead_per_run_s: a cell's flow run from its submission to its end (1 worker, one cell at a
  time) minus a local `dvc repro` of the same cell: the worker's polling, the flow-run process, the
  worktree, pulling the data from the remote, `dvc push` (goal <= 10 s);
- fixed_per_sweep_s: the rest of the 1-worker wall time (checks, the MLflow parent run, the gather).

    .venv/bin/python benchmarks/sweep_scaleout.py
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "pipeline"))

import scratch  # noqa: E402
from cluster_support import dvc, start_cluster  # noqa: E402
from sweep_support import stop  # noqa: E402

GRID = {"datasets": ["object_me"], "backbones": ["resnet18"], "variants": ["baseline", "visual"], "seeds": [0, 1]}
CELLS = [f"evaluate@{d}-{b}-{v}-{s}" for d in GRID["datasets"] for b in GRID["backbones"] for v in GRID["variants"]
         for s in GRID["seeds"]]


def forget(cluster) -> None:
    """No run-cache anywhere (the next sweep trains every cell), then the data made and pushed once."""
    shutil.rmtree(cluster.remote)
    cluster.remote.mkdir()
    for clone in [cluster.controller, *(w.clone for w in cluster.workers)]:
        shutil.rmtree(clone / ".dvc" / "cache", ignore_errors=True)
    dvc(cluster.controller, cluster.env, "repro", "saliency@object_me")
    subprocess.run([sys.executable, str(ROOT / "pipeline" / "dvc_push.py")], cwd=cluster.controller, env=cluster.env,
                   check=True, capture_output=True)


def timed_sweep(cluster, max_parallel: int) -> tuple[float, list[float]]:
    """Wall time of the sweep, and each cell's flow run from its submission to its end."""
    from datetime import datetime

    started = time.monotonic()
    out, run_id = cluster.run_sweep({**GRID, "max_parallel": max_parallel})
    seconds = time.monotonic() - started
    if out.returncode != 0:
        sys.exit(f"sweep failed:\n{out.stdout[-4000:]}{out.stderr[-2000:]}")
    stamp = datetime.fromisoformat
    cells = [(stamp(c["end_time"]) - stamp(c["created"])).total_seconds() for c in cluster.cell_runs(run_id)]
    return seconds, cells


def main() -> None:
    # no options; `--help` prints this text instead of starting the cluster
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    base = Path(tempfile.mkdtemp(prefix="megl-scaleout-"))
    cluster = start_cluster(base, workers=2, threads=1)
    try:
        queue = f"commit-{cluster.commit[:12]}"
        forget(cluster)
        two, _ = timed_sweep(cluster, max_parallel=2)
        forget(cluster)
        stop(cluster.workers[1].proc)
        one, cells = timed_sweep(cluster, max_parallel=1)
        cluster.workers[1].start(queue)

        local = cluster.clone("local", remote=False)
        (local / "params.yaml").write_text(scratch.with_grid((local / "params.yaml").read_text(), GRID))
        env = {**cluster.env, "MLFLOW_TRACKING_URI": f"sqlite:///{local}/mlflow.db", "MEGL_ROOT": str(local)}
        dvc(local, env, "repro", "saliency@object_me")  # the data, as a worker's first cell makes it: not timed
        per_cell = []
        for stage in CELLS:
            started = time.monotonic()
            dvc(local, env, "repro", stage)
            per_cell.append(time.monotonic() - started)
    finally:
        cluster.close()
        shutil.rmtree(base, ignore_errors=True)
    local_per_run = sum(per_cell) / len(per_cell)
    pool_per_run = sum(cells) / len(cells)
    print(json.dumps({
        "benchmark": "sweep_scaleout", "cells": len(CELLS), "compute_threads": 1, "machine": platform.machine(),
        "cores": __import__("os").cpu_count(),
        "sweep_1_worker_s": round(one, 1), "sweep_2_workers_s": round(two, 1), "speedup": round(one / two, 2),
        "local_dvc_repro_per_run_s": round(local_per_run, 1), "local_dvc_repro_total_s": round(sum(per_cell), 1),
        "pool_per_run_1_worker_s": round(pool_per_run, 1),
        "overhead_per_run_s": round(pool_per_run - local_per_run, 1),
        "fixed_per_sweep_s": round(one - sum(cells), 1),
        "goals": {"speedup": ">= 1.8", "overhead_per_run_s": "<= 10"},
    }, indent=2))


if __name__ == "__main__":
    main()
