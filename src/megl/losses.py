"""The MEGL objective (paper §3, DESIGN.md "The method"):

    L = L_pred + λ_textual L_textual + λ_visual · mean_b [ I_V L_visual(Â_b, A_b) + (1 − I_V) L_dc(Â_b, Ā) ]

Â is the per-sample min-max normalised Grad-CAM, A the GT map at the CAM grid, Ā the train
split's mean map. Each term is a function here so a test can check it by hand; variants switch
terms off (params `variants`), the loss functions themselves never change.
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


def consistency_kl(cam: torch.Tensor, mean_map: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample KL(Â ‖ Ā) with both maps normalised to sum 1 over the grid: -> (B,).

    eps keeps an all-zero CAM (or a zero cell of Ā) finite instead of NaN.
    """
    p = cam.flatten(1) + eps
    p = p / p.sum(dim=1, keepdim=True)
    q = mean_map.flatten().unsqueeze(0) + eps
    q = q / q.sum(dim=1, keepdim=True)
    return (p * (p.log() - q.log())).sum(dim=1)


def explanation_loss(cam, target, has_target, mean_map, terms: VariantConfig, eps: float = 1e-8) -> torch.Tensor:
    """mean over the batch of I_V · L1 + (1 − I_V) · KL; terms.visual / terms.consistency switch each off."""
    zero = cam.new_zeros(cam.shape[0])
    has = has_target.to(cam.dtype)
    l1 = visual_l1(cam, target) if terms.visual else zero
    kl = consistency_kl(cam, mean_map, eps) if terms.consistency else zero
    return (has * l1 + (1 - has) * kl).mean()
