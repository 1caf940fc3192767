"""No command loses a trained model: the habits that used to, on a user's checkout whose results
`dvc repro` made and git committed (the `ablation_sweep` fixture, tests/sweep_support.py, after its
Prefect sweep), with real DVC and Prefect. Each test ends with every model folder intact, or restored
from DVC's cache by the command the README gives.

- Model folders are byte-reproducible: re-running a train stage leaves dvc.lock as it was.
- A sweep, then a failing `dvc exp run -S train.lr=-1`.
- A stage run by hand (it records itself with `dvc commit`), then `dvc exp run`.
- The README's restore recipe after a sweep and after `dvc exp run`.
- kill -9 during a sweep, then `dvc repro`.
"""

import os
import re
import signal
import subprocess
import sys

import pytest

from sweep_support import REPO, descendants, digest, git, wait_for

pytestmark = pytest.mark.slow

BASELINE = "object_me-resnet18-baseline-0"


def models(work) -> dict[str, str]:
    return {k: v for k, v in digest(work, ("models",)).items()}


def readme_recipe() -> str:
    """The restore command README.md gives, as written there (so the test runs what users read)."""
    found = re.search(r"^\s*(git checkout -- params\.yaml dvc\.lock[^\n`]*&& dvc checkout)\s*$", (REPO / "README.md").read_text(),
                      re.MULTILINE)
    assert found, "README.md gives no `git checkout -- params.yaml dvc.lock ... && dvc checkout` line"
    return found.group(1)


def shell(sweep, command: str) -> subprocess.CompletedProcess:
    env = {**sweep.env, "PATH": f"{sys.prefix}/bin{os.pathsep}{sweep.env['PATH']}"}
    out = subprocess.run(["sh", "-c", command], cwd=sweep.work, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{command}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
    return out


def test_a_train_stage_run_again_gives_the_bytes_dvc_lock_records(ablation_sweep):
    """No run id or timestamp in a model folder: the same params give the same folder, so dvc.lock
    (committed) and a clean clone's `dvc repro` agree, and DVC's cache holds what the lock names."""
    sweep = ablation_sweep
    out = sweep.dvc("repro", "--force", "--single-item", f"train@{BASELINE}")
    assert f"Running stage 'train@{BASELINE}'" in out.stdout
    assert git(sweep.work, "status", "--porcelain") == ""  # dvc.lock, train.json, history.json as committed
    assert digest(sweep.work) == sweep.before


def test_a_sweep_then_a_failing_exp_run_keeps_every_model(ablation_sweep):
    sweep = ablation_sweep
    out = sweep.dvc("exp", "run", "-S", "train.lr=-1", ok=False)
    assert out.returncode != 0 and "train.lr: must be > 0" in out.stderr
    assert "stopped the run before any other stage ran" in out.stderr
    assert models(sweep.work) == {k: v for k, v in sweep.before.items() if k.startswith("models/")}
    git(sweep.work, "checkout", "--", "params.yaml")
    assert "Data and pipelines are up to date" in sweep.dvc("status").stdout
    assert digest(sweep.work) == sweep.before
    # and the sweep's own models are restorable: its params + `dvc repro --pull` train nothing
    (out_dir,) = (sweep.work / "results" / "sweeps").glob(f"*-{sweep.flow_run_id[:8]}")
    (sweep.work / "params.yaml").write_text((out_dir / "params.yaml").read_text())
    try:
        restored = sweep.dvc("repro", "--pull").stdout
        assert "Running stage 'train@" not in restored and "is cached - skipping run" in restored
        assert (sweep.work / "models/object_me/resnet18/megl/s1/model.safetensors").is_file()
    finally:
        sweep.restore_workspace()


def test_a_stage_run_by_hand_then_exp_run_keeps_its_model(ablation_sweep):
    sweep = ablation_sweep
    params = sweep.work / "params.yaml"
    params.write_text(params.read_text().replace("  lr: 0.001\n", "  lr: 0.002\n"))
    try:
        out = subprocess.run([sys.executable, "stages/train.py", "--dataset", "object_me", "--backbone", "resnet18",
                              "--variant", "baseline", "--seed", "0"], cwd=sweep.work, env=sweep.env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"recorded in DVC: `dvc commit train@{BASELINE}`" in out.stdout
        by_hand = models(sweep.work)
        assert by_hand != {k: v for k, v in sweep.before.items() if k.startswith("models/")}
        assert f"train@{BASELINE}" not in sweep.dvc("status", f"train@{BASELINE}").stdout  # DVC knows it

        exp = sweep.dvc("exp", "run", "-S", "evaluate.faithfulness_steps=3", f"evaluate@{BASELINE}")
        assert f"Running stage 'evaluate@{BASELINE}'" in exp.stdout and f"Running stage 'train@{BASELINE}'" not in exp.stdout
        assert models(sweep.work) == by_hand
    finally:
        shell(sweep, readme_recipe())  # and the recipe brings the committed results back
        assert digest(sweep.work) == sweep.before
        sweep.restore_workspace()


def test_the_readme_restore_recipe_after_a_sweep_and_after_exp_run(ablation_sweep):
    sweep = ablation_sweep
    shell(sweep, readme_recipe())  # after the fixture's sweep
    assert digest(sweep.work) == sweep.before
    exp = sweep.dvc("exp", "run", "-S", "train.lr=0.002", f"evaluate@{BASELINE}")
    assert f"Running stage 'train@{BASELINE}'" in exp.stdout or "is cached" in exp.stdout
    assert models(sweep.work) != {k: v for k, v in sweep.before.items() if k.startswith("models/")}
    shell(sweep, readme_recipe())
    assert digest(sweep.work) == sweep.before


def test_kill_9_during_a_sweep_then_dvc_repro(ablation_sweep):
    """Everything of the sweep killed outright (serve, its worker, the cell's processes) while a cell
    trains: the workspace is untouched and `dvc repro` has nothing to do; the cell's worktree left
    behind is removed by the next cell on that clone, which then completes."""
    import psutil

    sweep = ablation_sweep
    _, run_id = sweep.run_deployment({"variants": ["baseline"], "seeds": [3], "max_parallel": 1}, watch=False)

    def training():
        return [p for p in descendants(sweep.serve) if "stages/train.py" in " ".join(p.cmdline())]

    wait_for("a cell's training process", training, 300, sweep.serve, sweep.serve_log)
    victims = [psutil.Process(sweep.serve.pid), *descendants(sweep.serve)]
    for proc in victims:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    sweep.serve.wait(timeout=30)
    psutil.wait_procs(victims, timeout=30)
    left = [p for p in (sweep.work / ".dvc" / "tmp" / "cells").iterdir() if p.is_dir()]
    assert len(left) == 1  # the killed cell's worktree

    assert "Data and pipelines are up to date" in sweep.dvc("status").stdout
    assert "Running stage 'train@" not in sweep.dvc("repro").stdout
    assert digest(sweep.work) == sweep.before and git(sweep.work, "status", "--porcelain") == ""

    sweep.start_serve()
    out, run_id = sweep.run_deployment({"variants": ["baseline"], "seeds": [3], "max_parallel": 1})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not left[0].exists() and not list((sweep.work / ".dvc" / "tmp" / "cells").iterdir())
    assert digest(sweep.work) == sweep.before
