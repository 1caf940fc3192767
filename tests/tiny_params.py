"""Test repositories train a tiny grid: their params keep only the grid's datasets (and the raw
data those read), so DVC does not also build the varied benchmarks or DecoyFMNIST."""

from __future__ import annotations


def grid_datasets_only(params: dict) -> dict:
    keep = set(params["grid"]["datasets"])
    params["datasets"] = {k: v for k, v in params["datasets"].items() if k in keep}
    raw_dirs = {v["raw_dir"] for v in params["datasets"].values()}
    params["synthetic"] = {k: v for k, v in params["synthetic"].items() if v["out_dir"] in raw_dirs}
    params["decoys"] = {k: v for k, v in params.get("decoys", {}).items() if v["out_dir"] in raw_dirs}
    return params


def one_train_block(params: dict, lr: float = 0.001) -> dict:
    """Every variant reads the train block (the default grid's per-variant selected values dropped):
    the DVC and sweep tests change `train.lr` and expect the baseline's run to move, as it did before
    the defaults carried fair-1's selection. What a variant's own `train:` does is tested in
    tests/test_study_trials.py."""
    for block in params["variants"].values():
        block.pop("train", None)
    params["train"]["lr"] = lr
    return params
