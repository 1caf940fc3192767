"""Localisation of a saliency map (CAM) against a ground-truth (GT) map, per sample and batched.

Conventions (shared with the rest of the evaluation):
  cams      (B, h, w) float, the coarse CAM grid (e.g. 8x8), values in [0, 1]
  cams_up   (B, H, W) float in [0, 1], the CAM at image size, from `upsample`
  gt        (B, H, W) float at IMAGE size; a pixel is in the GT region iff gt > 0
            (0 = not annotated), whatever its positive value

`upsample` = bilinear interpolation (align_corners=False) to the image size, then per-sample
min-max renormalisation with eps 1e-8, (x - min) / (max - min + eps), the same formula as
`megl.models.gradcam.normalise`. Never over the batch. Computed in float64 with the coarse grid
min-maxed first as well (equivalent up to eps, see `upsample`), returned as float32. A constant
CAM (all pixels equal, e.g. all zero) carries no localisation and becomes exactly all zeros.

Metrics, per sample:
  IoU            CAM binarised at `cam >= threshold` (inclusive), GT at `gt > 0`;
                 |A ∩ B| / |A ∪ B|; an empty union (both masks empty) counts as 1.0, a
                 perfect agreement on "nothing"; one empty mask and one not gives 0.0.
  pointing game  hit iff the argmax pixel of the CAM lies in GT > 0. Ties go to the first
                 maximal pixel in row-major order, so an all-zero CAM points at pixel (0, 0).
                 An empty GT is always a miss.
  relevance mass sum of the CAM inside GT > 0 / sum of the CAM; 0.0 when the CAM sums to 0.
`localisation_metrics` averages them over the batch (mIoU as in RES / GRADIA: the threshold is
a parameter; RES uses 0.5 after min-max, GRADIA 0.75).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def _as_float(x) -> torch.Tensor:
    return torch.as_tensor(x).float()  # a no-op on float32 tensors


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def minmax(maps: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-sample min-max of (B, ...) maps to [0, 1]: (x - min) / (max - min + eps)."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo + eps)).view_as(maps)


def upsample(cams: torch.Tensor, size: int | tuple[int, int], eps: float = EPS) -> torch.Tensor:
    """(B, h, w) CAMs -> (B, H, W) at image size: bilinear (align_corners=False), then per-sample
    min-max with `eps`. Accepts numpy arrays; returns float32 on the input's device."""
    cams = _as_float(cams)
    if cams.dim() != 3:
        raise ValueError(f"cams must be (B, h, w), got shape {tuple(cams.shape)}")
    if cams.shape[0] == 0:
        return cams.new_zeros((0, *_size(size)))
    # Min-max commutes with bilinear interpolation (an affine map per sample; the weights sum to
    # 1), so normalising the coarse grid first changes the result only at the eps level, but it
    # keeps a constant map exactly constant: interpolating a constant in floating point leaves
    # rounding noise of ~1e-8 that a lone min-max with eps 1e-8 would blow up to O(1).
    coarse = minmax(cams.double(), eps)
    up = F.interpolate(coarse.unsqueeze(1), size=_size(size), mode="bilinear", align_corners=False)
    return minmax(up.squeeze(1), eps).float()


def _check_pair(cams_up: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cams_up = _as_float(cams_up)
    gt = _as_float(gt).to(cams_up.device)
    if cams_up.dim() != 3 or cams_up.shape != gt.shape:
        raise ValueError(
            f"cams_up and gt must both be (B, H, W) at image size, got {tuple(cams_up.shape)} and {tuple(gt.shape)}"
        )
    return cams_up, gt


def iou_per_sample(cams_up: torch.Tensor, gt: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B,) IoU of `cams_up >= threshold` with `gt > 0`; 1.0 where both masks are empty."""
    cams_up, gt = _check_pair(cams_up, gt)
    pred = (cams_up >= threshold).flatten(1)
    true = (gt > 0).flatten(1)
    inter = (pred & true).sum(1).double()
    union = (pred | true).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return iou.float()


def pointing_game(cams_up: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the CAM's argmax pixel (first maximal pixel in row-major order) has gt > 0."""
    cams_up, gt = _check_pair(cams_up, gt)
    flat = cams_up.flatten(1)
    n = flat.shape[1]
    is_max = flat == flat.max(dim=1, keepdim=True).values
    index = torch.arange(n, device=flat.device).expand_as(flat)
    # explicit first-maximum rule rather than relying on argmax's tie behaviour
    first = torch.where(is_max, index, torch.full_like(index, n)).min(dim=1).values
    return (gt.flatten(1) > 0).gather(1, first.unsqueeze(1)).squeeze(1)


def relevance_mass(cams_up: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) share of the CAM's mass inside gt > 0; 0.0 where the CAM sums to 0."""
    cams_up, gt = _check_pair(cams_up, gt)
    flat = cams_up.flatten(1).double()
    total = flat.sum(1)
    inside = (flat * (gt.flatten(1) > 0)).sum(1)
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), 0.0).float()


def localisation_metrics(
    cams: torch.Tensor, gt: torch.Tensor, image_size: int | tuple[int, int], threshold: float = 0.5
) -> dict:
    """Flat dict over a batch of coarse `cams` (B, h, w) and image-size `gt` (B, H, W):
    `miou`, `pointing_game` (hit rate in [0, 1]), `relevance_mass` (mean share in [0, 1]) as
    floats, and `localisation_samples` (B). An empty batch gives None metrics and count 0."""
    cams, gt = _as_float(cams), _as_float(gt)
    if cams.shape[0] != gt.shape[0]:
        raise ValueError(f"{cams.shape[0]} CAMs but {gt.shape[0]} GT maps")
    if tuple(gt.shape[1:]) != _size(image_size):
        raise ValueError(f"gt must be at image size {_size(image_size)}, got {tuple(gt.shape[1:])}")
    n = int(cams.shape[0])
    if n == 0:
        return {"miou": None, "pointing_game": None, "relevance_mass": None, "localisation_samples": 0}
    up = upsample(cams, image_size)
    gt = gt.to(up.device)
    return {
        "miou": iou_per_sample(up, gt, threshold).double().mean().item(),
        "pointing_game": pointing_game(up, gt).double().mean().item(),
        "relevance_mass": relevance_mass(up, gt).double().mean().item(),
        "localisation_samples": n,
    }
