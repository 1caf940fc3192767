"""CDEP (Rieger et al., ICML 2020; `laura-rieger/deep-explanation-penalization`): penalise how much
the region marked irrelevant contributes to the true class, by contextual decomposition of the
classifier (megl.models.contextual_decomposition, ResNet only: no faithful CD exists for ViT's
LayerNorm, softmax attention and GELU, so CDEP is n/a there). MEGL's maps mark the relevant region,
so the penalised region is the background 1 − [A > 0] at the input resolution.
"""

from __future__ import annotations

import torch

from megl.losses import annotated_mean, positive_region
from megl.methods.base import LogUniform, Method, StepInputs


def cdep_penalty(rel: torch.Tensor, irrel: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CDEP: the importance of the penalised region for the true class, softmax([rel_c, irrel_c])[0]
    with (rel, irrel) from contextual decomposition of that region -> (B,)."""
    pair = torch.stack([rel.gather(1, labels.view(-1, 1)), irrel.gather(1, labels.view(-1, 1))], dim=-1)
    return pair.softmax(-1)[:, 0, 0]


def cdep_terms(x: StepInputs) -> dict[str, torch.Tensor]:
    background = 1 - positive_region(x.batch["input_map"])
    rel, irrel = x.decompose(x.batch["pixels"], background)
    penalty = annotated_mean(cdep_penalty(rel, irrel, x.batch["label"]), x.batch["has_map"])
    return {"cdep": x.model.variant.weight * penalty}


# Their scripts: weight 0 by default, 500-5000 on ColorMNIST; the range covers both ends.
CDEP = Method(name="cdep", display="CDEP", group="explanation", reference="Rieger et al. 2020 (CDEP)",
              terms=cdep_terms, backbones=("resnet",), knobs=frozenset({"weight"}),
              elsewhere="CDEP needs contextual decomposition, which is defined for the ResNet's layers only; no "
                        "faithful decomposition exists for ViT (LayerNorm, softmax attention, GELU)",
              space={"variant.weight": LogUniform(1.0, 1e4)})
