"""`dvc push --run-cache`, plus the `cache: false` outputs the run-cache records (make run, a sweep's cells):

    python pipeline/dvc_push.py [DVC push targets...]

DVC 3's push uploads the run-cache records (.dvc/cache/runs) but, of the outputs, only the cached
ones: a stage's metrics and plots (`cache: false`, committed to git) stay on this host. Another host
restoring that stage from the run-cache (`dvc repro --pull`) then misses them and re-runs the stage.
`dvc fetch --run-cache` does fetch such outputs (DVC collects them from the records), so this uploads
them the same way: the objects every local run-cache record names, through DVC's own API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def push_run_cache_outputs(root: Path) -> tuple[int, int]:
    """Upload the objects of every run-cache record of `root` to its default remote; (sent, failed)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        runs = Path(repo.stage_cache.cache_dir)
        records = [(p.parent.name, p.name) for p in runs.glob("*/*/*")] if runs.is_dir() else []
        used = repo.stage_cache.get_used_objs(records) if records else {}
        objs = set().union(*used.values()) if used else set()
        result = repo.cloud.push(objs)
    return len(result.transferred), len(result.failed)


def main() -> int:
    dvc = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc) if dvc.is_file() else "dvc", "push", "--run-cache", *sys.argv[1:]]
    code = subprocess.call(cmd, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if code != 0:
        return code
    sent, failed = push_run_cache_outputs(Path.cwd())
    print(f"dvc_push: {sent} run-cache output files pushed" + (f", {failed} FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
