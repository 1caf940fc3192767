"""Damaged outputs of earlier stages stop the next stage with the file and the problem, never with a
numpy traceback or a silent number (an all-zero GT map once gave mIoU 0 with exit code 0)."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from megl.data.dataset import ExplanationDataset
from megl.data.records import DataError
from megl.layout import RunKey, run_layout
from megl.train import train


@pytest.fixture
def copy(small_params, tmp_path):
    """A private copy of the session's extracted dataset (and its params) to damage."""
    shutil.copytree(small_params.root / "data", tmp_path / "data")
    shutil.copy(small_params.root / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def rewrite_npy(path, change):
    array = np.load(path)
    np.save(path, change(array.copy()))


DAMAGES = {
    "truncated images": ("images.npy", lambda p: truncate(p), "images.npy: cannot be read as a .npy array, truncated or corrupt"),
    "images of another extraction": ("images.npy", lambda p: rewrite_npy(p, lambda a: a[:-3]), "images for"),
    "float images": ("images.npy", lambda p: rewrite_npy(p, lambda a: a.astype(np.float32)), "expected dtype uint8"),
    "truncated maps": ("saliency/maps_8.npy", lambda p: truncate(p), "maps_8.npy: cannot be read as a .npy array"),
    "zeroed maps": ("saliency/maps_8.npy", lambda p: rewrite_npy(p, np.zeros_like), "ground-truth maps are empty (all zero)"),
    "NaN map": ("saliency/maps_8.npy", lambda p: rewrite_npy(p, lambda a: np.where(np.arange(a.size).reshape(a.shape) == 5, np.nan, a)),
                "1 maps hold NaN or infinite values"),
    "short index": ("saliency/index.npy", lambda p: rewrite_npy(p, lambda a: a[:10]), "entries for"),
    "garbage manifest": ("manifest.parquet", lambda p: p.write_bytes(b"not parquet"), "manifest.parquet: cannot be read as parquet"),
    "bad classes": ("classes.json", lambda p: p.write_text("{"), "classes.json: not valid JSON"),
    "missing mean map": ("saliency/mean_map_8.npy", lambda p: p.unlink(), "mean_map_8.npy: missing"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_dataset_names_the_file(copy, damage):
    name, do, message = DAMAGES[damage]
    do(copy / "data/object_me" / name)
    with pytest.raises(DataError) as err:
        ExplanationDataset(copy / "data/object_me", "train", 8)
    assert message in str(err.value) and str(copy / "data/object_me") in str(err.value)


def stage(repo, name, params, *args):
    cmd = [sys.executable, f"stages/{name}.py", "--params", str(params), *args]
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)


RUN = ["--dataset", "object_me", "--backbone", "resnet18", "--variant", "baseline"]


@pytest.mark.slow
def test_stages_stop_naming_the_damaged_file(copy, small_params, repo):
    """Through the stage CLIs: a clear one-line error, exit 1, no traceback, previous outputs kept."""
    key = RunKey("object_me", "resnet18", "baseline", 0)
    lay = run_layout(copy, key)
    train(small_params, "object_me", "resnet18", "baseline", run_layout(copy, key), max_steps=2)
    assert stage(repo, "evaluate", copy / "params.yaml", *RUN).returncode == 0
    kept = {p: p.read_bytes() for p in (lay.test_metrics, lay.model_dir / "model.safetensors")}

    # GT maps at the image size overwritten with zeros: evaluation used to report mIoU 0 and exit 0
    maps = copy / "data/object_me/saliency/maps_64.npy"
    original = maps.read_bytes()
    rewrite_npy(maps, np.zeros_like)
    out = stage(repo, "evaluate", copy / "params.yaml", *RUN)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "maps_64.npy" in out.stderr and "are empty (all zero)" in out.stderr
    maps.write_bytes(original)

    truncate(copy / "data/object_me/images.npy")
    for name in ("train", "evaluate"):
        out = stage(repo, name, copy / "params.yaml", *RUN)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert f"{name}: {copy}/data/object_me/images.npy: cannot be read as a .npy array, truncated or corrupt" in out.stderr
    out = stage(repo, "saliency", copy / "params.yaml", "--dataset", "object_me")
    assert out.returncode == 1 and "images.npy: cannot be read" in out.stderr and "Traceback" not in out.stderr
    assert {p: p.read_bytes() for p in kept} == kept  # nothing replaced by the failed runs

    truncate(lay.model_dir / "model.safetensors")
    out = stage(repo, "evaluate", copy / "params.yaml", *RUN)
    assert out.returncode == 1 and "model.safetensors: cannot be read as safetensors" in out.stderr
    assert lay.test_metrics.read_bytes() == kept[lay.test_metrics]
