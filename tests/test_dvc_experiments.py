"""DVC experiments as users run them, on a git + DVC copy of the project with tiny sizes, and DVC
started as `.venv/bin/dvc` without the virtualenv on PATH (the stages find the project's .venv
through stages/python.sh and $DVC_ROOT):

- `dvc exp run -S` (which rewrites params.yaml: `- yes` unquoted), `dvc exp show`, `dvc exp diff`;
- `dvc exp run --queue` + `dvc queue start` (a temporary copy of the project; its MLflow runs land
  in the project's store) and `dvc exp apply`;
- a params error stops in the validate stage with every earlier output in place; a stage that fails
  while running loses nothing: DVC removed its outputs, `dvc checkout` and the run-cache bring them back.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_params import grid_datasets_only, one_train_block

from megl import tracking

pytestmark = pytest.mark.slow

TRAIN = "train@object_me-resnet18-baseline-0"
VENV = Path(sys.prefix)  # the virtualenv running the tests: the project's .venv in `make test` and CI


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def digest(root: Path, parts=("models", "metrics", "plots", "results")) -> dict[str, str]:
    """Every output file under root, by content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for part in parts for p in sorted((root / part).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def project(repo, tmp_path_factory):
    work = tmp_path_factory.mktemp("exps") / "project"
    work.mkdir()
    for name in ("dvc.yaml", "stages", "src", ".gitignore", ".dvcignore"):
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, work / name)
    (work / ".venv").symlink_to(VENV)  # what `make venv` leaves in a checkout
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for block in params["synthetic"].values():
        block.update(num_samples=300, map_size=24)
    params["grid"].update(datasets=["object_me"], backbones=["resnet18"], variants=["baseline"], seeds=[0])
    params["train"].update(epochs=2, batch_size=32)
    params["evaluate"].update(faithfulness_samples=8, faithfulness_steps=4, efficiency_warmup=1, efficiency_iters=2)
    params["tracking"]["enabled"] = True  # sqlite:///<project>/mlflow.db (gitignored)
    grid_datasets_only(params)
    one_train_block(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the tables stage reads both datasets' metrics folders; this grid has only object_me
    dvc_yaml = (work / "dvc.yaml").read_text().replace("      - metrics/action_me\n", "")
    (work / "dvc.yaml").write_text(dvc_yaml)

    # `.venv/bin/dvc ...` from a shell where the venv is not activated: no venv on PATH
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "MEGL_PYTHON", "DVC_ROOT")}
    env.update(PATH=os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != (VENV / "bin").resolve()),
               DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")

    def run(*cmd, ok=True, extra_env=None, timeout=900):
        out = subprocess.run(list(cmd), cwd=work, env=env | (extra_env or {}), capture_output=True, text=True, timeout=timeout)
        if ok:
            assert out.returncode == 0, " ".join(cmd) + "\n" + out.stdout[-4000:] + out.stderr[-4000:]
        return out

    def dvc(*args, **kw):
        return run(str(VENV / "bin" / "dvc"), *args, **kw)

    run("git", "init", "-q")
    dvc("init", "-q")
    out = dvc("repro")
    assert "Running stage 'validate'" in out.stdout and f"Running stage '{TRAIN}'" in out.stdout
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")
    return work, run, dvc


def test_exp_run_set_param_show_and_diff(project):
    work, run, dvc = project
    # the summary stage: its upstream (train, evaluate) runs too, and it writes what `dvc exp show` reads
    dvc("exp", "run", "-S", "train.epochs=1", "-n", "one-epoch", "summary")
    # DVC rewrote params.yaml (YAML 1.2 style): the unquoted yes/no the loader must read as strings
    text = (work / "params.yaml").read_text()
    assert "- yes\n" in text.replace("  ", "") and "epochs: 1" in text
    summary = json.loads((work / "metrics/object_me/resnet18/baseline/s0/train.json").read_text())
    assert summary["epochs"] == 1

    shown = json.loads(dvc("exp", "show", "--json").stdout)
    exps = {e["name"]: e for rev in shown for e in (rev.get("experiments") or []) for e in e.get("revs", [])}
    assert "one-epoch" in exps, shown
    data = exps["one-epoch"]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["epochs"] == 1
    # the compact metrics file beside the per-run ones
    assert sorted(data["metrics"]["summary/metrics.json"]["data"]["baseline"]) == ["accuracy", "miou"]
    # the README's recipe: a few named columns
    columns = dvc("exp", "show", "--csv", "--drop", ".*", "--keep", r"Experiment|.*\.(accuracy|miou)$|train\.epochs$").stdout
    assert columns.splitlines()[0] == "Experiment,baseline.accuracy,baseline.miou,train.epochs", columns

    diff = json.loads(dvc("exp", "diff", "HEAD", "one-epoch", "--json").stdout)
    assert diff["params"]["params.yaml"]["train.epochs"] == {"old": 2, "new": 1, "diff": -1}
    run("git", "checkout", "--", "params.yaml", "dvc.lock", "metrics", "plots", "summary")
    dvc("checkout", "-q")


def test_queue_runs_in_a_copy_and_apply_brings_it_back(project):
    """The queued run happens in .dvc/tmp/exps/... (deleted afterwards): its stages still find the
    project's .venv and log to the project's MLflow store ($DVC_ROOT)."""
    from mlflow.tracking import MlflowClient

    work, run, dvc = project
    dvc("exp", "run", "--queue", "-S", "train.lr=0.002", "-n", "lr-2e-3", TRAIN)
    # DVC starts its queue workers as `dvc` from PATH (dvc/repo/experiments/queue/celery.py): the one
    # command that needs the venv's bin on PATH (docs/dvc.md "Experiments with DVC")
    dvc("queue", "start", extra_env={"PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    deadline, status = time.monotonic() + 600, ""
    while time.monotonic() < deadline:
        status = dvc("queue", "status").stdout
        if "lr-2e-3" in status and ("Success" in status or "Failed" in status):
            break
        time.sleep(3)
    assert "Success" in status, status + dvc("queue", "logs", "lr-2e-3", ok=False).stdout[-4000:]

    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("megl").experiment_id],
                              filter_string="params.`train.lr` = '0.002'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].info.artifact_uri.startswith((work / "mlruns").as_uri())

    dvc("exp", "apply", "lr-2e-3")
    config = json.loads((work / "models/object_me/resnet18/baseline/s0/config.json").read_text())
    assert config["train"]["lr"] == 0.002 and yaml.safe_load((work / "params.yaml").read_text())["train"]["lr"] == 0.002
    digest = tracking.model_digest(work / "models/object_me/resnet18/baseline/s0")
    assert runs[0].data.tags[tracking.MODEL_DIGEST_TAG] == digest  # the run names the model it exported
    assert TRAIN not in dvc("status", TRAIN).stdout  # the workspace is that experiment, up to date
    run("git", "checkout", "--", "params.yaml", "dvc.lock", "metrics", "plots", "summary")
    dvc("checkout", "-q")


@pytest.mark.parametrize("change, message", [
    ({"train": {"lr": -1.0}}, "train.lr: must be > 0"),
    ({"datasets": {"object_me": {"image_size": 0}}}, "datasets.object_me.image_size: must be >= 8"),
    ({"datasets": {"object_me": {"raw_dir": "data/raw/typo"}}}, "datasets.object_me.raw_dir: "),
    ({"train": {"lerning_rate": 0.1}}, "unknown key(s) ['lerning_rate']"),
])
def test_params_error_keeps_every_output(project, change, message):
    work, run, dvc = project
    before = digest(work)
    params = yaml.safe_load((work / "params.yaml").read_text())
    for block, values in change.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[block][key].update(value)
            else:
                params[block][key] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("repro", ok=False)
    assert out.returncode != 0
    assert "Running stage 'validate'" in out.stdout and "Running stage 'synthesize" not in out.stdout
    assert message in out.stderr and "stopped the run before any other stage ran" in out.stderr
    assert digest(work) == before
    run("git", "checkout", "--", "params.yaml")
    assert ran(dvc("repro").stdout) == set()  # its mark stayed (persist), params as locked: nothing runs


def test_a_stage_failing_while_running_loses_nothing(project):
    """Valid params that fail only when the stage runs (the CAM grid does not match the backbone's):
    DVC removed the stage's outputs before running it; the model comes back from the cache with
    `dvc checkout`, and the whole stage from the run-cache with `dvc repro` at the old params (no
    training)."""
    work, run, dvc = project
    before = digest(work)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["backbones"]["resnet18"]["grid"] = 16  # a saliency grid, so validation passes
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("exp", "run", TRAIN, ok=False)
    assert out.returncode != 0 and f"Running stage '{TRAIN}'" in out.stdout
    assert "backbones.resnet18.grid is 16 but resnet18 (tiny) gives a 8x8 CAM" in out.stderr
    assert not (work / "models/object_me/resnet18/baseline/s0").exists()
    dvc("checkout", "models/object_me/resnet18/baseline/s0")
    assert {k: v for k, v in digest(work).items() if k.startswith("models/")} == \
        {k: v for k, v in before.items() if k.startswith("models/")}
    run("git", "checkout", "--", "params.yaml")
    out = dvc("repro")
    assert ran(out.stdout) == {"validate"} and f"Stage '{TRAIN}' is cached - skipping run" in out.stdout
    assert digest(work) == before
