"""The real DVC pipeline, run in a copy of the repository with small synthetic sizes."""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

pytestmark = pytest.mark.slow


@pytest.fixture
def pipeline(repo, tmp_path, venv_bin):
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("dvc.yaml", "stages", "src"):
        src = repo / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for block in params["synthetic"].values():
        block.update(num_samples=300, image_size=32, map_size=24)
    for block in params["datasets"].values():
        block["image_size"] = 32
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}

    def dvc(*args):
        out = subprocess.run([str(venv_bin / "dvc"), *args], cwd=work, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    dvc("init", "--no-scm", "-q")
    return work, dvc


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_repro_builds_everything_then_is_a_no_op(pipeline):
    work, dvc = pipeline
    stages = {f"{s}@{d}" for s in ("synthesize", "extract", "saliency") for d in ("object_me", "action_me")}
    assert ran(dvc("repro")) == stages
    for ds in ("object_me", "action_me"):
        for name in ("manifest.parquet", "classes.json", "images.npy", "saliency/index.npy", "saliency/mean_map_8.npy"):
            assert (work / "data" / ds / name).is_file()
        report = json.loads((work / "metrics" / ds / "dataset.json").read_text())
        assert report["samples"]["in"] == report["samples"]["kept"] + report["samples"]["rejected"]
        assert report["table1"]["classes"] == 10
    again = dvc("repro")
    assert ran(again) == set() and "Data and pipelines are up to date" in again

    # Editing one dataset's block re-runs that dataset's stages only.
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["datasets"]["action_me"]["labels"]["min_samples_per_class"] = 20
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc("repro")) == {"extract@action_me", "saliency@action_me"}

    metrics = json.loads(dvc("metrics", "show", "--json"))
    assert metrics  # the reports are DVC metrics
