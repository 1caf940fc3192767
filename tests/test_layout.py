"""One run = one folder per output kind (megl.layout), and dvc.yaml / the gate agree with it."""

import dataclasses
import fnmatch
from pathlib import Path

import pytest
import yaml

from megl.config import TrainConfig
from megl.gate import load_tolerances
from megl.layout import RunKey, dataset_report, grid_runs, run_layout


def test_run_paths(tmp_path):
    key = RunKey("object_me", "resnet18", "megl", 2)
    assert key.name == "object_me/resnet18/megl/s2"
    lay = run_layout(tmp_path, key)
    rel = {f.name: lay.relative(getattr(lay, f.name)) for f in dataclasses.fields(lay) if f.name not in ("key", "root")}
    assert rel == {
        "model_dir": "models/object_me/resnet18/megl/s2",
        "checkpoint_dir": "checkpoints/object_me/resnet18/megl/s2",
        "results_dir": "results/object_me/resnet18/megl/s2",
        "metrics_dir": "metrics/object_me/resnet18/megl/s2",
        "train_metrics": "metrics/object_me/resnet18/megl/s2/train.json",
        "val_metrics": "metrics/object_me/resnet18/megl/s2/val.json",
        "test_metrics": "metrics/object_me/resnet18/megl/s2/test.json",
        "efficiency": "metrics/object_me/resnet18/megl/s2/efficiency.json",
        "plots_dir": "plots/object_me/resnet18/megl/s2",
        "history": "plots/object_me/resnet18/megl/s2/history.json",
        "per_class_f1": "plots/object_me/resnet18/megl/s2/per_class_f1.json",
        "confusion": "plots/object_me/resnet18/megl/s2/confusion.json",
    }
    assert dataset_report(tmp_path, "object_me") == tmp_path / "metrics/object_me/dataset.json"
    # different seeds never share a file
    other = run_layout(tmp_path, dataclasses.replace(key, seed=3))
    assert not {lay.model_dir, lay.test_metrics, lay.history} & {other.model_dir, other.test_metrics, other.history}


def test_grid_order_and_bad_keys():
    runs = grid_runs(["a", "b"], ["r"], ["megl", "baseline"], [1, 0])
    assert [k.name for k in runs[:4]] == ["a/r/megl/s1", "a/r/megl/s0", "a/r/baseline/s1", "a/r/baseline/s0"]
    assert len(runs) == 8
    for bad in (dict(seed=-1), dict(seed=True), dict(seed="0"), dict(variant="a/b"), dict(dataset="")):
        with pytest.raises(ValueError):
            RunKey(**{"dataset": "d", "backbone": "b", "variant": "v", "seed": 0} | bad)


def _expand(template: str, key: RunKey) -> str:
    for name in ("dataset", "backbone", "variant", "seed"):
        template = template.replace("${item.%s}" % name, str(getattr(key, name)))
    return template


def _paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def test_dvc_yaml_uses_the_layout(repo):
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    key = RunKey("object_me", "vit_b16", "text", 1)
    lay = run_layout(repo, key)
    train, evaluate = stages["train"], stages["evaluate"]
    for stage in (train, evaluate):
        assert stage["matrix"]["seed"] == "${grid.seeds}"
        assert "--seed ${item.seed}" in stage["cmd"]
    # per-run metrics are cached outs: only the summary stage declares metrics (`dvc exp show` stays narrow)
    assert [_expand(p, key) for p in _paths(train["outs"])] == [lay.relative(lay.model_dir), lay.relative(lay.train_metrics)]
    assert "metrics" not in train and "metrics" not in evaluate
    assert [_expand(p, key) for p in _paths(train["plots"])] == [lay.relative(lay.history)]
    assert lay.relative(lay.model_dir) in [_expand(p, key) for p in evaluate["deps"]]
    assert [_expand(p, key) for p in _paths(evaluate["outs"])] == [lay.relative(p) for p in (
        lay.results_dir, lay.test_metrics, lay.val_metrics, lay.efficiency)]
    assert [name for name, stage in _stages(repo).items() if "metrics" in _definitions(stage)] == ["summary"]
    assert [_expand(p, key) for p in _paths(evaluate["plots"])] == [lay.relative(lay.per_class_f1), lay.relative(lay.confusion)]


def _stages(repo) -> dict:
    return yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]


def _definitions(stage: dict) -> dict:
    return stage.get("do", stage)  # foreach stages keep their definition under `do`


def test_every_stage_waits_for_validation_and_is_run_cached(repo):
    """validate runs before anything else (every stage depends on its mark) and whenever any param
    changes; no other output is persist, so DVC's run-cache restores any stage that ran before
    (persist turns it off) and a failed stage's outputs come back from the cache."""
    stages = _stages(repo)
    assert stages["validate"]["params"] == [{"params.yaml": None}]
    assert _paths(stages["validate"]["outs"]) == ["data/params.ok"]
    for name, stage in stages.items():
        if name == "validate":
            continue
        body = _definitions(stage)
        assert "data/params.ok" in body["deps"], name
        assert body["cmd"].startswith("sh stages/python.sh stages/"), name
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind, []):
                assert not isinstance(entry, dict) or not next(iter(entry.values())).get("persist"), (name, entry)


def test_thread_count_is_a_param_of_every_torch_stage(repo):
    stages = _stages(repo)
    assert "compute" in stages["train"]["params"] and "compute" in stages["evaluate"]["params"]


def test_train_stage_declares_every_train_param_but_the_seed(repo):
    """The seed comes from --seed; every other train.* key must be a dep, or editing it would not re-train."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    declared = {p for p in stages["train"]["params"] if p.startswith("train")}
    expected = {f"train.{f.name}" for f in dataclasses.fields(TrainConfig) if f.name != "seed"}
    assert declared == expected, f"dvc.yaml train params: add {sorted(expected - declared)}, drop {sorted(declared - expected)}"
    assert not any(p.startswith("train") and p != "train.eval_batch_size" for p in stages["evaluate"]["params"])


def test_gate_covers_test_metrics_only(repo):
    files = load_tolerances(repo / "metrics" / "tolerances.yaml").files
    lay = run_layout(Path("."), RunKey("action_me", "resnet18", "visual_text", 2))

    def gated(path: Path) -> bool:
        return any(fnmatch.fnmatch(path.as_posix(), pattern) for pattern in files)

    assert gated(lay.test_metrics) and gated(dataset_report(Path("."), "action_me"))
    assert not gated(lay.efficiency) and not gated(lay.train_metrics)
    assert not gated(Path("metrics/action_me/saliency.json")) and not gated(Path("tables/table2.csv"))
