"""The benchmark scripts' own code paths, on tiny data: they import the pipeline's functions and
rotted unnoticed once (method_seeds and vit_probe called a Params method that had gone)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import yaml

from megl.config import load_params
from megl.data.decoy_fmnist import N_CLASSES, add_decoy, patch_grey

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    sys.path.insert(0, str(REPO / "benchmarks"))  # decoy_free_fmnist imports method_seeds
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_method_seeds_trains_and_scores_one_run_with_the_variants_own_lr(small_params, tmp_path, monkeypatch):
    """run_one trains with the pipeline's loop and scores the test split; an --extra lr reaches a
    variant whose own train block sets lr (params.yaml's baseline does), not only `train`."""
    bench = load("method_seeds")
    repo, work = tmp_path / "repo", tmp_path / "work"  # small_params' folder is shared: not edited
    for folder in (repo, work):
        folder.mkdir()
        (folder / "data").symlink_to(small_params.root / "data")
    raw = yaml.safe_load((small_params.root / "params.yaml").read_text())
    raw["variants"]["baseline"]["train"] = {"lr": 0.5}
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(bench, "REPO", repo)
    params_file = bench.scoped_params(work, {"lr": 0.002, "epochs": 1}, "baseline", "baseline")
    assert load_params(params_file).for_run("baseline", 3).train.lr == 0.002
    row = bench.run_one(params_file, "object_me", "resnet18", "baseline", 3, "baseline")
    assert row["seed"] == 3 and row["best_epoch"] == 0
    assert 0.0 <= row["test_accuracy"] <= 1.0 and 0.0 <= row["miou"] <= 1.0


def test_the_decoy_free_control_repaints_only_the_train_patches():
    """Same corners and same generator stream as the published decoy (so the test split that
    follows is byte for byte the decoyed set's); on train the patch's grey is a random class's."""
    control = load("decoy_free_fmnist")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2000, 28, 28), dtype=np.uint8)
    labels = np.arange(2000) % N_CLASSES
    published_rng, control_rng = np.random.default_rng(1), np.random.default_rng(1)
    published, masks = add_decoy(images, labels, published_rng, train=True)
    repainted, same_masks = control.random_train_patch(0)(images, labels, control_rng, train=True)
    np.testing.assert_array_equal(masks, same_masks)
    np.testing.assert_array_equal(published[~masks], repainted[~masks])
    assert published_rng.random() == control_rng.random()  # the stream goes on as published
    greys = repainted[masks].reshape(-1, 16)
    assert (greys == greys[:, :1]).all()  # one grey per patch
    agreement = (greys[:, 0] == patch_grey(labels)).mean()
    assert 0.07 < agreement < 0.13  # chance (0.1), where the published train patch agrees always
    test, test_masks = control.random_train_patch(0)(images, labels, np.random.default_rng(2), train=False)
    np.testing.assert_array_equal(test, add_decoy(images, labels, np.random.default_rng(2), train=False)[0])
