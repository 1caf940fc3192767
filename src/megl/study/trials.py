"""A trial is an ordinary variant of the grid: its block in the study's params is the method's
variant block with the trial's hyperparameters written in (`variant.<key>` into the block itself,
`train.<key>` into the block's `train:` overrides). So each trial is a normal run of the pipeline:
its own DVC stages, run-cache, MLflow run and metrics folder."""

from __future__ import annotations

import copy

from megl import methods
from megl.config import VariantConfig
from megl.study.sampling import draw


def trial_name(variant: str, trial: int) -> str:
    return f"{variant}_t{trial:02d}"


def search_space(variant: VariantConfig) -> dict:
    """The hyperparameters a variant's trials draw: its method's space, less the ones its switched-off
    terms never read (the plain backbone draws only the learning rate)."""
    return methods.get(variant.method).search_space(variant)


def trial_block(block: dict, values: dict[str, float]) -> dict:
    """`block` (a variant's params block) with the trial's values written in."""
    out = copy.deepcopy(dict(block))
    for path, value in values.items():
        scope, key = path.split(".", 1)
        if scope == "variant":
            out[key] = value
        elif scope == "train":
            out.setdefault("train", {})
            out["train"] = dict(out["train"] or {}) | {key: value}
        else:
            raise ValueError(f"search space key {path!r}: expected variant.<key> or train.<key>")
    return out


def trials_of(name: str, variant: VariantConfig, block: dict, search_seed: int, count: int) -> dict[str, tuple[int, dict, dict]]:
    """trial variant name -> (trial number, drawn values, its params block), for trials 0..count-1."""
    space = search_space(variant)
    out = {}
    for k in range(count):
        values = draw(space, search_seed, variant.method, k)
        out[trial_name(name, k)] = (k, values, trial_block(block, values))
    return out
