"""The RES family (Gao et al., KDD 2022; `YuyangGao/RES`, RES.py), the paper's Table 2 baselines:
GRADIA, HAICS, RES-G and RES-L, each `CE + weight · its loss` on the Grad-CAM of the true class
with constant channel weights (RES.py's plain `.backward()`: cam `detached`), normalised as RES.py
does: `cam − min`, then `/ (max + eps)`, per sample, no ReLU. The label is the human map's positive
region at the CAM grid, nearest-resized (RES.py's cv2 INTER_NEAREST of the binary mask).
docs/methods.md names the quirks of the reference code not copied here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megl.losses import annotated_mean, mean_abs_error, positive_at_grid, positive_region
from megl.methods.base import LogUniform, Method, StepInputs

gradia_loss = mean_abs_error  # GRADIA as RES.py runs it: mean |Â − A⁺| over the CAM grid, per sample


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


def _cam_and_label(x: StepInputs) -> tuple[torch.Tensor, torch.Tensor]:
    cam = x.minmax(x.raw_cam)  # RES.py's linear normalisation of the raw Grad-CAM (no ReLU)
    return cam, positive_at_grid(x.batch["input_map"], cam.shape[-1])


def gradia_terms(x: StepInputs) -> dict[str, torch.Tensor]:
    cam, target = _cam_and_label(x)
    return {"gradia": x.model.variant.weight * annotated_mean(gradia_loss(cam, target), x.batch["has_map"])}


def haics_terms(x: StepInputs) -> dict[str, torch.Tensor]:
    cam, target = _cam_and_label(x)
    return {"haics": x.model.variant.weight * annotated_mean(haics_loss(cam, target), x.batch["has_map"])}


def res_g_terms(x: StepInputs) -> dict[str, torch.Tensor]:
    cam, target = _cam_and_label(x)
    transformed = scale_to_max(gaussian_blur_3x3(target))
    v = x.model.variant
    return {"res_g": v.weight * res_loss(cam, target, transformed, x.batch["has_map"], v.eta)}


def res_l_terms(x: StepInputs) -> dict[str, torch.Tensor]:
    cam, target = _cam_and_label(x)
    transformed = x.model.loss_state(positive_region(x.batch["input_map"]))
    v = x.model.variant
    return {"res_l": v.weight * res_loss(cam, target, transformed, x.batch["has_map"], v.eta)}


_RES = dict(group="explanation", cam="detached", knobs=frozenset({"weight", "cam_mode", "explainer"}),
            space={"variant.weight": LogUniform(0.01, 100.0)})
_ETA = frozenset({"weight", "eta", "cam_mode", "explainer"})

GRADIA = Method(name="gradia", display="GRADIA", reference="Gao et al. 2022 (GRADIA), as RES.py runs it", terms=gradia_terms, **_RES)
HAICS = Method(name="haics", display="HAICS", reference="Shen et al. 2021, as RES.py runs it (--transforms HAICS)",
               terms=haics_terms, **_RES)
RES_G = Method(name="res_g", display="RES-G", reference="Gao et al. 2022, RES.py --transforms Gaussian",
               terms=res_g_terms, **(_RES | {"knobs": _ETA}))
RES_L = Method(name="res_l", display="RES-L", reference="Gao et al. 2022, RES.py --transforms S1", terms=res_l_terms,
               state=LearnedMaskTransform, **(_RES | {"knobs": _ETA}))
METHODS = (GRADIA, HAICS, RES_G, RES_L)
