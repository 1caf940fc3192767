"""The real DVC pipeline, run in a copy of the repository with small synthetic sizes."""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from megl.layout import RunKey, run_layout
from tiny_params import grid_datasets_only

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
        block.update(num_samples=300, map_size=24)
    params["grid"].update(datasets=["object_me", "action_me"], backbones=["resnet18"], variants=["megl", "baseline"], seeds=[0])
    params["train"].update(epochs=1, batch_size=32)
    params["tracking"]["enabled"] = False
    grid_datasets_only(params)
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


def runs(variants=("megl", "baseline"), seed=0) -> set[str]:
    """train and evaluate stage names of the grid's runs with these variants and this seed."""
    return {f"{s}@{d}-resnet18-{v}-{seed}" for s in ("train", "evaluate") for d in ("object_me", "action_me") for v in variants}


def test_repro_builds_everything_then_is_a_no_op(pipeline):
    work, dvc = pipeline
    stages = {f"{s}@{d}" for s in ("synthesize", "extract", "saliency") for d in ("object_me", "action_me")}
    stages |= runs()
    assert ran(dvc("repro")) == stages | {"validate", "tables", "summary"}
    for ds in ("object_me", "action_me"):
        for name in ("manifest.parquet", "classes.json", "images.npy", "saliency/index.npy", "saliency/mean_map_8.npy"):
            assert (work / "data" / ds / name).is_file()
        report = json.loads((work / "metrics" / ds / "dataset.json").read_text())
        assert report["samples"]["in"] == report["samples"]["kept"] + report["samples"]["rejected"]
        assert report["table1"]["classes"] == 10
        for variant in ("megl", "baseline"):
            lay = run_layout(work, RunKey(ds, "resnet18", variant, 0))
            assert (lay.model_dir / "model.safetensors").is_file()
            summary = json.loads(lay.train_metrics.read_text())
            assert summary["epochs"] == 1 and 0 <= summary["best_val_accuracy"] <= 1 and summary["seed"] == 0
            metrics = json.loads(lay.test_metrics.read_text())
            assert 0 <= metrics["accuracy"] <= 1 and ("bleu_4" in metrics) == (variant == "megl")
            assert lay.efficiency.is_file() and lay.history.is_file() and lay.per_class_f1.is_file() and lay.confusion.is_file()
            assert (lay.results_dir / "predictions.parquet").is_file()
    tables = sorted(p.name for p in (work / "tables").iterdir())
    assert len(tables) == 18 and "table2.md" in tables
    table2 = (work / "tables" / "table2.md").read_text()
    assert "| ResNet18 (tiny) | MEGL |" in table2 and "| ResNet18 (tiny) | - |" in table2
    again = dvc("repro")
    assert ran(again) == set() and "Data and pipelines are up to date" in again

    # Editing one dataset's block re-runs that dataset's stages only.
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["datasets"]["action_me"]["labels"]["min_samples_per_class"] = 20
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # that dataset's stages re-run (and the summary, which reads every dataset's report); their outputs
    # are unchanged, so nothing re-trains
    assert ran(dvc("repro")) == {"validate", "extract@action_me", "saliency@action_me", "summary"}

    # Editing one variant's block re-trains that variant only.
    params["variants"]["baseline"]["consistency"] = False  # same value: YAML rewritten, block unchanged
    params["variants"]["megl"]["consistency"] = False
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc("repro")) == runs(["megl"]) | {"validate", "tables", "summary"}

    # A second seed adds that seed's runs (and the tables) without re-running the first seed's.
    seed0 = {p: p.read_bytes() for p in sorted((work / "metrics").rglob("s0/test.json"))}
    params["grid"]["seeds"] = [0, 1]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc("repro")) == runs(seed=1) | {"validate", "tables", "summary"}
    assert {p: p.read_bytes() for p in seed0} == seed0
    s1 = run_layout(work, RunKey("object_me", "resnet18", "megl", 1))
    assert json.loads((s1.model_dir / "config.json").read_text())["train"]["seed"] == 1
    assert json.loads(s1.test_metrics.read_text())["seed"] == 1
    table4 = (work / "tables" / "table4.md").read_text()
    # megl lost its consistency term above: the table names it by the terms it has
    assert "over 2 seeds" in table4 and "| Object-ME | ResNet18 (tiny) | Visual+Text | " in table4
    megl = next(line for line in table4.splitlines() if line.startswith("| Object-ME | ResNet18 (tiny) | Visual+Text | "))
    assert megl.count(" ± ") == 2 and megl.endswith(" | 2 |")  # accuracy and mIoU: mean ± 95 % interval over 2 seeds
    assert ran(dvc("repro")) == set()

    # Dropping a seed re-runs nothing but the tables (its outputs stay on disk, out of the tables).
    params["grid"]["seeds"] = [1]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc("repro")) == {"validate", "tables", "summary"}
    assert (work / "tables" / "table4.md").read_text().count(" | 1 |") == 4

    # the summary: the grid at a glance, per dataset (two here) and variant
    metrics = json.loads(dvc("metrics", "show", "--json"))[""]["data"]
    # the one metrics file DVC reads by default (`dvc exp show`, `dvc metrics diff`): a few columns, not every run's 40
    assert sorted(metrics) == ["summary/metrics.json"]
    summary = metrics["summary/metrics.json"]["data"]
    assert summary["seeds"] == 1 and sorted(summary["object_me"]) == ["baseline", "megl"]
    assert summary["object_me"]["megl"]["accuracy"] == round(json.loads(s1.test_metrics.read_text())["accuracy"], 4)
    # what the gate compares, in git: every dataset's extraction report and every run's test metrics, by path
    gated = json.loads((work / "summary" / "runs.json").read_text())
    assert gated[s1.relative(s1.test_metrics)] == json.loads(s1.test_metrics.read_text())
    assert sorted(p for p in gated if p.endswith("dataset.json")) == [f"metrics/{d}/dataset.json" for d in ("action_me", "object_me")]
