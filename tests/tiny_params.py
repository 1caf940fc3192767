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
