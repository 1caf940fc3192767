"""The MEGL objective (paper §3, DESIGN.md "The method"):

    L = L_pred + λ_textual L_textual + λ_visual · mean_b [ I_V L_visual(Â_b, A_b) + (1 − I_V) L_dc(Â_b, Ā) ]

Â is the per-sample min-max normalised Grad-CAM, A the GT map at the CAM grid, Ā the train
split's mean map. Each term is a function here so a test can check it by hand; variants switch
terms off (params `variants`), the loss functions themselves never change.

L_dc is a KL between spatial distributions. The paper builds the CAM's distribution from Â
(min-max, then sum to 1); that map is invariant to the CAM's shift and scale, so its gradient
grows as 1/(max − min): at initialisation, when Grad-CAMs are nearly flat, it was 27x the CE
gradient and MEGL trained worse than no guidance at all. By default the distribution is instead
softmax(raw Grad-CAM / T), whose gradient is bounded by 1/T (train.consistency_input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megl.config import VariantConfig


def prediction_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def visual_l1(cam: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean |Â − A| over the grid: (B, h, w) x (B, h, w) -> (B,)."""
    return (cam - target).abs().flatten(1).mean(dim=1)


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
    cam, target, has_target, mean_map, terms: VariantConfig, eps: float = 1e-8, *,
    raw_cam: torch.Tensor | None = None, consistency_input: str = "minmax", temperature: float = 1.0,
) -> torch.Tensor:
    """mean over the batch of I_V · L1 + (1 − I_V) · KL; terms.visual / terms.consistency switch each off.

    consistency_input "softmax" needs raw_cam (the Grad-CAM before ReLU and normalisation)."""
    zero = cam.new_zeros(cam.shape[0])
    has = has_target.to(cam.dtype)
    l1 = visual_l1(cam, target) if terms.visual else zero
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
