"""Pictures for people: CAM and ground-truth overlays on the input images, titled.

A gallery is one row per sample (image | CAM overlay | ground-truth overlay), with a title over each
column and, left of each row, the sample's label and the model's prediction, so the picture reads
on its own (in MLflow, in results/). Text uses Pillow's bundled font: the same on every machine.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLUMNS = ("image", "predicted-class CAM", "ground truth")
FONT_SIZE = 12
LINE = FONT_SIZE + 4
PAD = 4


def heat_overlay(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """Blend a [0,1] map (any grid, upsampled bilinearly) over an RGB image in red."""
    h, w = image.shape[:2]
    up = np.asarray(Image.fromarray(saliency.astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR))
    up = np.clip(up, 0, 1)[..., None]
    red = np.zeros_like(image, dtype=np.float32)
    red[..., 0] = 255
    return (image * (1 - 0.6 * up) + red * 0.6 * up).astype(np.uint8)


def _panels(images: np.ndarray, cams: np.ndarray, gt_maps: np.ndarray, has_gt: np.ndarray, scale: int) -> np.ndarray:
    rows = []
    for img, cam, gt, has in zip(images, cams, gt_maps, has_gt):
        gt_panel = heat_overlay(img, gt) if has else np.full_like(img, 128)
        rows.append(np.concatenate([img, heat_overlay(img, cam), gt_panel], axis=1))
    grid = np.concatenate(rows, axis=0)
    return grid.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else grid


def overlay_grid(images: np.ndarray, cams: np.ndarray, gt_maps: np.ndarray, has_gt: np.ndarray,
                 labels: list[str], predictions: list[str], scale: int = 2) -> np.ndarray:
    """One row per sample: image | CAM overlay | GT overlay ("no map" in grey where there is none),
    titled per column, with "label: ..." and "pred: ..." left of each row. RGB uint8."""
    font = ImageFont.load_default(size=FONT_SIZE)
    panels = _panels(images, cams, gt_maps, has_gt, scale)
    side = images.shape[1] * scale  # one panel's width (and height)
    texts = [f"label: {a}" for a in labels] + [f"pred: {p}" for p in predictions]
    left = PAD * 2 + max([int(font.getlength(t)) for t in texts] + [0])
    canvas = Image.new("RGB", (left + panels.shape[1], LINE + panels.shape[0]), "white")
    canvas.paste(Image.fromarray(panels), (left, LINE))
    draw = ImageDraw.Draw(canvas)
    for i, title in enumerate(COLUMNS):
        draw.text((left + i * side + side // 2, LINE // 2), title, fill="black", font=font, anchor="mm")
    for i, (label, pred) in enumerate(zip(labels, predictions)):
        top = LINE + i * side
        draw.text((PAD, top + PAD), f"label: {label}", fill="black", font=font)
        colour = "black" if pred == label else (200, 0, 0)
        draw.text((PAD, top + PAD + LINE), f"pred: {pred}", fill=colour, font=font)
        if not has_gt[i]:
            draw.text((left + 2 * side + side // 2, top + side // 2), "no map", fill="white", font=font, anchor="mm")
    return np.asarray(canvas)
