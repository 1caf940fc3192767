"""Loss pieces every method shares: the prediction loss, and how a human map becomes a label.

Each method's own explanation loss lives with its registry entry (megl.methods: megl_terms, res,
cdep, rrr, xil). They supervise only the samples with a human map (weight 0 elsewhere: no
imputation) and read the human map as its positive region, A > 0 — the same region the
evaluation's mIoU scores against. Per-sample values are averaged over the annotated samples of the
batch, as RES.py averages its stacked maps; a batch without one contributes 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prediction_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def mean_abs_error(cam: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean |Â − A| over the grid: (B, h, w) x (B, h, w) -> (B,)."""
    return (cam - target).abs().flatten(1).mean(dim=1)


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
