"""`dvc push --run-cache`, plus the `cache: false` outputs the run-cache records (make run, a sweep's cells):

    python pipeline/dvc_push.py [--with-deps] [targets...]

DVC 3's push uploads the run-cache records (.dvc/cache/runs) but, of the outputs, only the cached
ones: a stage's metrics and plots (`cache: false`, committed to git) stay on this host. Another host
restoring that stage from the run-cache (`dvc repro --pull`) then misses them and re-runs the stage.
`dvc fetch --run-cache` does fetch such outputs (DVC collects them from the records), so this uploads
them the same way: the objects every local run-cache record names, through DVC's own API.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def push(root: Path, targets: list[str] | None = None, with_deps: bool = False) -> tuple[int, int]:
    """`dvc push --run-cache [--with-deps] [targets]`, then the objects of every run-cache record of
    `root`, to its default remote, in one process; returns (files sent, files failed)."""
    from dvc.exceptions import UploadError
    from dvc.repo import Repo

    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    with Repo(str(root)) as repo:
        try:
            sent, failed = repo.push(targets or None, with_deps=with_deps, run_cache=True), 0
        except UploadError as exc:
            sent, failed = 0, exc.amount
        runs = Path(repo.stage_cache.cache_dir)
        records = [(p.parent.name, p.name) for p in runs.glob("*/*/*")] if runs.is_dir() else []
        used = repo.stage_cache.get_used_objs(records) if records else {}
        objs = set().union(*used.values()) if used else set()
        result = repo.cloud.push(objs)
    return sent + len(result.transferred), failed + len(result.failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--with-deps", action="store_true", help="also the outputs of the targets' upstream stages")
    parser.add_argument("targets", nargs="*", help="stages or outputs (default: everything dvc.lock names)")
    args = parser.parse_args()
    sent, failed = push(Path.cwd(), args.targets, args.with_deps)
    print(f"dvc_push: {sent} files pushed to the DVC remote" + (f", {failed} FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
