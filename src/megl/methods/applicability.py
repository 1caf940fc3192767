"""Where a method has no run: a grid cell whose method has no faithful form on the backbone (its
registry entry's `backbones`), or that trains once per dataset (the MLLM baselines, in the grid's
first backbone only). The train stage publishes such a run as n/a (megl.train), the evaluation and
the tables carry the reason on: a table then says n/a instead of a number that could not be made.
"""

from __future__ import annotations

from megl import methods
from megl.config import Params


def not_applicable(params: Params, backbone: str, variant: str) -> str | None:
    """Why this variant's method has no run on this backbone, or None."""
    method = methods.get(params.variant(variant).method)
    first = params.grid.backbones[0]
    if method.once_per_dataset and backbone != first:
        return f"{method.name} has no classifier backbone: it is trained once per dataset, in the {first} runs"
    family = params.backbone(backbone).family
    if method.backbones is not None and family not in method.backbones:
        return method.elsewhere or f"{method.name} has no form on a {family} backbone (only {', '.join(method.backbones)})"
    return None
