"""A stage script run by hand records what it wrote in DVC, so DVC is the only writer of its outputs.

`python stages/train.py ...` (or `accelerate launch stages/train.py ...`) writes the very folders
dvc.yaml declares as the stage's outputs. Left at that, `dvc.lock` and the workspace disagree, and
the next `dvc exp run` (which first checks the workspace out against `dvc.lock`) or `dvc checkout`
replaces the new model with the locked one, or deletes it when the locked one is not in the cache.
So a successful run by hand ends with `dvc commit <its stage>`: dvc.lock records the outputs, their
bytes go to DVC's cache and its run-cache, exactly as if `dvc repro` had run the stage.

Nothing is recorded when DVC itself runs the script ($DVC_STAGE is set), outside a DVC project, for
another params file than the project's params.yaml, for a run dvc.yaml does not declare (a seed or
variant outside `grid`: its paths are not DVC outputs), on any process but the first of a
multi-process launch, or without the `dvc` command (a GPU box without it: a warning says so).
The DVC CLI, not its Python API: the library imports no DVC (the core trains without it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def _dvc() -> str | None:
    beside = Path(sys.executable).with_name("dvc")  # the project's venv, activated or not
    return str(beside) if beside.is_file() else shutil.which("dvc")


def record_by_hand_run(root: Path, params_file: Path, stage: str) -> str:
    """`dvc commit` the stage when this process ran it by hand; returns what it did, in words."""
    if os.environ.get("DVC_STAGE"):
        return "run by DVC"
    if os.environ.get("RANK", "0") != "0":
        return "not the first process"
    root = Path(root).resolve()
    if not ((root / "dvc.yaml").is_file() and (root / ".dvc").is_dir()):
        return "not a DVC project"
    if Path(params_file).resolve() != root / "params.yaml":
        return f"{params_file} is not the project's params.yaml"
    dvc = _dvc()
    if dvc is None:
        print(f"warning: no `dvc` command: {stage}'s outputs are not recorded in dvc.lock; run `dvc commit {stage}`",
              file=sys.stderr)
        return "no dvc command"
    out = subprocess.run([dvc, "--wait-for-lock", "commit", "--force", stage], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if out.returncode != 0:
        if "does not exist" in out.stderr or "not found" in out.stderr:
            return f"{stage} is not a stage of dvc.yaml (its run is outside params grid)"
        print(f"warning: `dvc commit {stage}` failed, so dvc.lock does not record this run's outputs:\n{out.stderr.strip()}",
              file=sys.stderr)
        return "dvc commit failed"
    print(f"recorded in DVC: `dvc commit {stage}` (dvc.lock and the cache now hold this run's outputs)")
    return "recorded"
