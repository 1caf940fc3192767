"""The summary stage's content (src/megl/summary.py): one compact metrics file and the overlay
plots' rows, with nothing shown that a run could not compute."""

import json

from megl.layout import RunKey, run_layout
from megl.summary import build


def write(root, key: RunKey, test: dict, history=()):
    lay = run_layout(root, key)
    lay.test_metrics.parent.mkdir(parents=True, exist_ok=True)
    lay.test_metrics.write_text(json.dumps(test))
    lay.train_metrics.write_text(json.dumps({"history": [{"epoch": e, "val_accuracy": a} for e, a in history]}))


def test_one_dataset_and_backbone_keys_by_variant(tmp_path):
    write(tmp_path, RunKey("d", "b", "megl", 0), {"accuracy": 0.5, "miou": 0.25, "cider": 1.0}, [(0, 0.4), (1, 0.5)])
    write(tmp_path, RunKey("d", "b", "megl", 1), {"accuracy": 0.7, "miou": 0.35, "cider": 1.2})
    write(tmp_path, RunKey("d", "b", "llava", 0), {"accuracy": 0.3, "miou": "not_applicable"})
    write(tmp_path, RunKey("d", "b", "llava", 1), {"accuracy": 0.1})
    parts = build(tmp_path, ["d"], ["b"], ["megl", "llava", "baseline"], [0, 1])
    # baseline has no runs: absent; llava's mIoU was never computed: absent, not 0
    assert parts["metrics"] == {"seeds": 2, "megl": {"accuracy": 0.6, "miou": 0.3, "cider": 1.1}, "llava": {"accuracy": 0.2}}
    assert parts["accuracy"] == [{"method": "megl", "accuracy": 0.6}, {"method": "llava", "accuracy": 0.2}]
    assert parts["miou"] == [{"method": "megl", "miou": 0.3}]
    assert parts["history"] == [{"run": "megl/s0", "epoch": 0, "val_accuracy": 0.4}, {"run": "megl/s0", "epoch": 1, "val_accuracy": 0.5}]


def test_a_metric_missing_in_one_seed_is_left_out_and_a_short_cell_says_so(tmp_path):
    write(tmp_path, RunKey("d", "b", "megl", 0), {"accuracy": 0.5, "miou": 0.2})
    write(tmp_path, RunKey("d", "b", "megl", 1), {"accuracy": 0.7})
    write(tmp_path, RunKey("d2", "b", "megl", 0), {"accuracy": 0.9})
    parts = build(tmp_path, ["d", "d2"], ["b"], ["megl"], [0, 1])
    assert parts["metrics"] == {"seeds": 2, "d": {"megl": {"accuracy": 0.6}}, "d2": {"megl": {"seeds": 1, "accuracy": 0.9}}}
    assert [r["method"] for r in parts["accuracy"]] == ["d/megl", "d2/megl"]


def test_runs_collects_the_gated_files_by_path_and_leaves_out_what_is_absent(tmp_path):
    """summary/runs.json: what the regression gate compares, committed to git (the files are DVC-cached)."""
    write(tmp_path, RunKey("d", "b", "megl", 0), {"accuracy": 0.5, "miou": float("nan")})
    (tmp_path / "metrics" / "d" / "dataset.json").write_text(json.dumps({"samples": 10}))
    parts = build(tmp_path, ["d"], ["b"], ["megl", "baseline"], [0], reports=["d", "other"])
    assert list(parts["runs"]) == ["metrics/d/dataset.json", "metrics/d/b/megl/s0/test.json"]
    assert parts["runs"]["metrics/d/b/megl/s0/test.json"]["accuracy"] == 0.5
    assert parts["metrics"] == {"seeds": 1, "megl": {"accuracy": 0.5}}  # NaN is no mean
