"""MEGL's objective (paper §3), the registry entry `megl`, and its ablations (Table 4) as switches:

    L = L_pred + λ_textual L_textual + λ_visual · mean_b [ I_V L_visual(Â_b, A_b) + (1 − I_V) L_dc(Â_b, Ā) ]

Â is the per-sample min-max normalised Grad-CAM of the true class, A the GT map at the CAM grid, Ā
the train split's mean map; a variant switches terms off (`visual`, `consistency`, `text`), the
functions never change. L_textual is the SDTG head's token NLL of the explanation
(megl.models.sdtg), whose prefix reads I ⊙ Â, so its gradient reaches Â.

L_dc is a KL between spatial distributions. The paper builds the CAM's distribution from Â
(min-max, then sum to 1); that map is invariant to the CAM's shift and scale, so its gradient
grows as 1/(max − min): at initialisation, when Grad-CAMs are nearly flat, it was 27x the CE
gradient in a development run (an observation, not a committed result). By default the
distribution is instead softmax(raw Grad-CAM / T), whose gradient is bounded by 1/T
(train.consistency_input); the paper's min-max form stays selectable.
"""

from __future__ import annotations

import torch

from megl.losses import mean_abs_error
from megl.methods.base import LogUniform, Method, StepInputs

def visual_l1(cam: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L_visual per sample: |Â - A| over the grid's cells, their mean, or their sum (the paper's
    Eq. 1 writes the norm: cells x the mean, 64x on the 8x8 grid; train.visual_l1)."""
    per_sample = mean_abs_error(cam, target)
    return per_sample * cam[0].numel() if reduction == "sum" else per_sample


def consistency_target_map(mean_map: torch.Tensor, target: str) -> torch.Tensor:
    """The map L_dc pulls Â towards (train.consistency_target): Ā (the paper), a uniform map, or Ā's
    cells in one fixed random order (same values, no place: is L_dc more than a centre prior?)."""
    if target == "mean_map":
        return mean_map
    if target == "uniform":
        return torch.ones_like(mean_map)
    if target == "shuffled":
        order = torch.randperm(mean_map.numel(), generator=torch.Generator().manual_seed(0))
        return mean_map.flatten()[order].view_as(mean_map)
    raise ValueError(f"unknown consistency target {target!r}")


def _target_distribution(mean_map: torch.Tensor, eps: float) -> torch.Tensor:
    q = mean_map.flatten().unsqueeze(0) + eps
    return q / q.sum(dim=1, keepdim=True)


def consistency_kl(cam: torch.Tensor, mean_map: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample KL(Â ‖ Ā) with both maps normalised to sum 1 over the grid: -> (B,).
    The paper-literal form (consistency_input: minmax).

    eps keeps an all-zero CAM (or a zero cell of Ā) finite instead of NaN.
    """
    p = cam.flatten(1) + eps
    p = p / p.sum(dim=1, keepdim=True)
    q = _target_distribution(mean_map, eps)
    return (p * (p.log() - q.log())).sum(dim=1)


def consistency_kl_softmax(raw_cam: torch.Tensor, mean_map: torch.Tensor, temperature: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample KL(softmax(raw CAM / T) ‖ Ā), raw CAM before ReLU: (B, h, w) -> (B,)."""
    log_p = torch.log_softmax(raw_cam.flatten(1) / temperature, dim=1)
    q = _target_distribution(mean_map, eps)
    return (log_p.exp() * (log_p - q.log())).sum(dim=1)


def explanation_loss(
    cam, target, has_target, mean_map, terms, eps: float = 1e-8, *,
    raw_cam: torch.Tensor | None = None, consistency_input: str = "minmax", temperature: float = 1.0,
    l1_reduction: str = "mean",
) -> torch.Tensor:
    """mean over the batch of I_V · L1 + (1 − I_V) · KL; terms.visual / terms.consistency switch each off.

    consistency_input "softmax" needs raw_cam (the Grad-CAM before ReLU and normalisation)."""
    zero = cam.new_zeros(cam.shape[0])
    has = has_target.to(cam.dtype)
    l1 = visual_l1(cam, target, l1_reduction) if terms.visual else zero
    if not terms.consistency:
        kl = zero
    elif consistency_input == "softmax":
        if raw_cam is None:
            raise ValueError("consistency_input 'softmax' needs raw_cam")
        kl = consistency_kl_softmax(raw_cam, mean_map, temperature, eps)
    elif consistency_input == "minmax":
        kl = consistency_kl(cam, mean_map, eps)
    else:
        raise ValueError(f"unknown consistency_input {consistency_input!r}")
    return (has * l1 + (1 - has) * kl).mean()


def megl_terms(x: StepInputs) -> dict[str, torch.Tensor]:
    """λ_visual · (L1 | KL) and λ_textual · L_textual, each when the variant switches it on."""
    m, v, batch = x.model, x.model.variant, x.batch
    terms = {}
    if v.visual or v.consistency:
        terms["visual"] = m.lambda_visual * explanation_loss(
            x.cam, batch["gt_map"], batch["has_map"], m.consistency_map, v, m.cam_eps,
            raw_cam=x.raw_cam, consistency_input=m.consistency_input, temperature=m.consistency_temperature,
            l1_reduction=m.visual_l1,
        )
    if v.text:
        ids, mask = (t.to(x.pixels.device) for t in m.text_head.encode(batch["explanation"]))
        terms["textual"] = m.lambda_textual * m.text_head(x.pixels, x.cam, x.out.features, ids, mask)
    return terms


def megl_label(variant) -> str:
    """Table 4's names: the terms a variant keeps ("-" for none: plain cross-entropy)."""
    if variant.visual and variant.consistency and variant.text:
        name = "MEGL"
    else:
        name = "+".join(t for t, on in (("Visual", variant.visual), ("Consistency", variant.consistency),
                                        ("Text", variant.text)) if on) or "-"
    return name + (" (multi-layer Â)" if variant.explainer == "multilayer" else "")


MEGL = Method(
    name="megl", display="MEGL", group="megl", reference="MEGL paper §3, Eq. 1-4 (docs/methods.md)",
    terms=megl_terms, cam="train",
    uses_cam_when=lambda v: v.visual or v.consistency or v.text,
    writes_explanations=lambda v: v.text,
    label=megl_label,
    knobs=frozenset({"visual", "text", "consistency", "cam_mode", "explainer"}),
    # λ_visual over four decades, as every explanation weight: with train.visual_l1 sum (the paper's
    # norm, 64x the mean on the 8x8 grid) 0.01-100 holds the mean's 0.64-6400
    space={"train.lambda_visual": LogUniform(0.01, 100.0), "train.lambda_textual": LogUniform(0.01, 10.0)},
    space_when=lambda v, key: {"train.lambda_visual": v.visual or v.consistency, "train.lambda_textual": v.text}.get(key, True),
)
