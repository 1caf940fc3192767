"""Pictures for people: CAM and ground-truth overlays on the input images."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _heat(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """Blend a [0,1] map (any grid, upsampled bilinearly) over an RGB image in red."""
    h, w = image.shape[:2]
    up = np.asarray(Image.fromarray(saliency.astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR))
    up = np.clip(up, 0, 1)[..., None]
    red = np.zeros_like(image, dtype=np.float32)
    red[..., 0] = 255
    return (image * (1 - 0.6 * up) + red * 0.6 * up).astype(np.uint8)


def overlay_grid(images: np.ndarray, cams: np.ndarray, gt_maps: np.ndarray, has_gt: np.ndarray, scale: int = 2) -> np.ndarray:
    """One row per sample: image | CAM overlay | GT overlay (grey where there is no GT map)."""
    rows = []
    for img, cam, gt, has in zip(images, cams, gt_maps, has_gt):
        gt_panel = _heat(img, gt) if has else np.full_like(img, 128)
        rows.append(np.concatenate([img, _heat(img, cam), gt_panel], axis=1))
    grid = np.concatenate(rows, axis=0)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid
