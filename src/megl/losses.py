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
from torch import nn

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


# --- The visual explanation-guided baselines (paper Table 2; ../shared/BASELINES.md) -------------
# Each is one named loss over the same batch the MEGL terms see. They supervise only the samples
# with a human map (weight 0 elsewhere: no imputation) and read the human map as its positive
# region, A > 0 — the same region the evaluation's mIoU scores against. Per-sample values are
# averaged over the annotated samples of the batch, as RES.py averages its stacked maps; a batch
# without one contributes 0.

def positive_region(input_map: torch.Tensor) -> torch.Tensor:
    """(B, H, W) human map at the image size -> its positive region A > 0 as 0/1 floats."""
    return (input_map > 0).to(input_map.dtype)


def positive_at_grid(input_map: torch.Tensor, grid: int) -> torch.Tensor:
    """A > 0, nearest-resized to the CAM grid: RES.py's label (cv2 INTER_NEAREST of the binary mask)."""
    region = positive_region(input_map).unsqueeze(1)
    return F.interpolate(region, size=(grid, grid), mode="nearest").squeeze(1)


def annotated_mean(per_sample: torch.Tensor, has_map: torch.Tensor) -> torch.Tensor:
    """Mean of per-sample values over the samples with a human map (0 when there is none)."""
    has = has_map.to(per_sample.dtype)
    return (per_sample * has).sum() / has.sum().clamp_min(1)


def gradia_loss(cam: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """GRADIA as RES.py runs it: mean |Â − A⁺| over the CAM grid, (B, h, w) -> (B,)."""
    return (cam - target).abs().flatten(1).mean(dim=1)


def haics_loss(cam: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor | None = None) -> torch.Tensor:
    """HAICS: BCE between Â and the binary mask over the annotated cells, sum(bce ⊙ m) / sum(m)
    per sample -> (B,). A dense human map labels every cell (salient or not), so m defaults to all
    cells. (RES.py reduces the BCE to a scalar before masking, so its mask only rescales the loss.)"""
    # torch's BCE (as RES.py's nn.BCELoss): log clamped at -100 and a guarded backward, so a cell
    # at exactly 0 or 1 (min-max normalisation puts one at each) stays finite
    bce = F.binary_cross_entropy(cam, target, reduction="none")
    m = torch.ones_like(bce) if annotated is None else annotated.to(bce.dtype)
    return (bce * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


def gaussian_blur_3x3(maps: torch.Tensor) -> torch.Tensor:
    """OpenCV's GaussianBlur((3, 3), 0) on (B, h, w): the fixed [1,2,1]ᵀ[1,2,1]/16 kernel, border
    reflect-101 (torch's 'reflect' pad)."""
    k1 = maps.new_tensor([1.0, 2.0, 1.0])
    kernel = (k1[:, None] * k1[None, :] / 16).view(1, 1, 3, 3)
    padded = F.pad(maps.unsqueeze(1), (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernel).squeeze(1)


def scale_to_max(maps: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """maps / (max + eps) per sample, as RES divides its transformed labels."""
    return maps / (maps.flatten(1).max(1).values.view(-1, 1, 1) + eps)


def minmax_res(maps: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RES's label normalisation: (t − min) / (max(t − min) + eps) per sample."""
    shifted = maps - maps.flatten(1).min(1).values.view(-1, 1, 1)
    return scale_to_max(shifted, eps)


def res_robust_loss(cam: torch.Tensor, target: torch.Tensor, has_map: torch.Tensor) -> torch.Tensor:
    """RES's L_robust for positive-only labels, a scalar over the annotated samples of the batch:
    sum_{positive cells} |tanh(5 (Â − a)) − 1| / #positive cells, with a = the smallest Â on a
    positive cell of the batch, no gradient. (RES.py's BF_solver searches a by brute force; with
    no negative labels its objective is maximised exactly by that minimum.)"""
    pos = target.bool() & has_map.view(-1, 1, 1).bool()
    if not pos.any():
        return cam.sum() * 0
    a = cam.detach()[pos].min()
    per_cell = (torch.tanh(5 * (cam - a)) - 1).abs()
    return (per_cell * pos).sum() / pos.sum()


def res_loss(cam: torch.Tensor, target: torch.Tensor, transformed: torch.Tensor, has_map: torch.Tensor, eta: float) -> torch.Tensor:
    """RES-G / RES-L: relu(L_robust − η) + mean |Â − T(A⁺)| over the annotated samples."""
    robust = torch.relu(res_robust_loss(cam, target, has_map) - eta)
    return robust + annotated_mean(gradia_loss(cam, transformed), has_map)


class LearnedMaskTransform(nn.Module):
    """RES-L's learned T: one Conv2d(1, 1, 2s, stride s, padding s/2) from the full-resolution
    binary mask (image size S) to the CAM grid (s = S / grid), min-max normalised per sample. Part
    of the model: trained by the same optimiser, checkpointed and resumed with it."""

    def __init__(self, image_size: int, grid: int) -> None:
        super().__init__()
        if image_size % grid or (image_size // grid) % 2:
            raise ValueError(f"RES-L: image size {image_size} must be an even multiple of the CAM grid {grid}")
        s = image_size // grid
        self.conv = nn.Conv2d(1, 1, kernel_size=2 * s, stride=s, padding=s // 2)

    def forward(self, region: torch.Tensor) -> torch.Tensor:
        return minmax_res(self.conv(region.unsqueeze(1)).squeeze(1))


def rrr_penalty(input_grads: torch.Tensor, irrelevant: torch.Tensor) -> torch.Tensor:
    """Ross et al. 2017's right-reasons term per sample: sum over pixels and channels of
    (A ⊙ ∂ Σ_k log p_k / ∂x)², A the irrelevant region (B, H, W) -> (B,)."""
    return (irrelevant.unsqueeze(1) * input_grads).pow(2).flatten(1).sum(1)


def cdep_penalty(rel: torch.Tensor, irrel: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CDEP: the importance of the penalised region for the true class, softmax([rel_c, irrel_c])[0]
    with (rel, irrel) from contextual decomposition of that region -> (B,)."""
    pair = torch.stack([rel.gather(1, labels.view(-1, 1)), irrel.gather(1, labels.view(-1, 1))], dim=-1)
    return pair.softmax(-1)[:, 0, 0]
