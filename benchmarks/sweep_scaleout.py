"""Scale-out of a sweep on the work pool: the same 4-cell sweep (object_me x resnet18 x {baseline,
visual} x seeds {0, 1}, tiny, params compute.threads 1) on 1 and on 2 workers, and the same cells by
a local `dvc repro`, on the loopback cluster of tests/cluster_support.py (PostgreSQL behind the
Prefect and MLflow servers, workers in their own clones, a shared DVC remote folder). Between runs
the DVC remote and every clone's cache are emptied, so each sweep trains every cell.

Prints one JSON object:
- speedup: wall time with 1 worker / with 2 workers (goal >= 1.8 on 2 cores, 1 thread per cell);
- overhead_per_run_s: (sweep wall time with 1 worker) / cells - a local run's time, the pool's cost
  per cell (submission, the worker's polling, the flow-run process, the worktree, `dvc push`, and
  the gather spread over the cells; goal <= 10 s).

    .venv/bin/python benchmarks/sweep_scaleout.py
"""

from __future__ import annotations

import json
import platform
import shutil
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
    """No run-cache anywhere: the next sweep trains every cell."""
    shutil.rmtree(cluster.remote)
    cluster.remote.mkdir()
    for clone in [cluster.controller, *(w.clone for w in cluster.workers)]:
        shutil.rmtree(clone / ".dvc" / "cache", ignore_errors=True)


def timed_sweep(cluster) -> float:
    started = time.monotonic()
    out, run_id = cluster.run_sweep({**GRID, "max_parallel": 2})
    seconds = time.monotonic() - started
    if out.returncode != 0:
        sys.exit(f"sweep failed:\n{out.stdout[-4000:]}{out.stderr[-2000:]}")
    return seconds


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="megl-scaleout-"))
    cluster = start_cluster(base, workers=2, threads=1)
    try:
        queue = f"commit-{cluster.commit[:12]}"
        two = timed_sweep(cluster)
        forget(cluster)
        stop(cluster.workers[1].proc)
        one = timed_sweep(cluster)
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
    print(json.dumps({
        "benchmark": "sweep_scaleout", "cells": len(CELLS), "compute_threads": 1, "machine": platform.machine(),
        "cores": __import__("os").cpu_count(),
        "sweep_1_worker_s": round(one, 1), "sweep_2_workers_s": round(two, 1), "speedup": round(one / two, 2),
        "local_dvc_repro_per_run_s": round(local_per_run, 1), "local_dvc_repro_total_s": round(sum(per_cell), 1),
        "pool_per_run_1_worker_s": round(one / len(CELLS), 1),
        "overhead_per_run_s": round(one / len(CELLS) - local_per_run, 1),
        "goals": {"speedup": ">= 1.8", "overhead_per_run_s": "<= 10"},
    }, indent=2))


if __name__ == "__main__":
    main()
