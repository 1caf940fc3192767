"""Faithfulness of saliency maps, model-agnostic: everything goes through a callable
`predict(images (N, 3, H, W)) -> probabilities (N, C)` (softmax already applied), called under
`torch.no_grad()` in chunks of at most `batch_size` images. `target` (B,) is the class whose
probability is tracked; the field's convention (RISE) is the class originally predicted.

Inputs: images (B, 3, H, W) float in [0, 1]; saliency_up (B, H, W) at image size in [0, 1]
(e.g. `megl.evaluate.localisation.upsample` of the coarse CAM).

Deletion / insertion (RISE, Petsiuk et al., BMVC 2018)
  The H*W = n pixels (all channels of a pixel together) are ordered by saliency, descending;
  equal saliencies keep pixel-index (row-major) order (stable sort), so the order is unique.
  At the steps + 1 points k_i = floor(i * n / steps), i = 0..steps, the top-k_i pixels are
    deletion   replaced by the baseline (0.0, black) in the image: k = 0 is the image, k = n the
               baseline image; a faithful map makes the probability fall fast (lower AUC better)
    insertion  copied from the image into a blurred copy: k = 0 is the blurred image, k = n the
               image; a faithful map makes the probability rise fast (higher AUC better)
  AUC = trapezoid rule of the target probability over the fraction of pixels k_i / n in [0, 1],
  computed as sum_i (p_i + p_{i+1}) (k_{i+1} - k_i) / (2 n) in float64 (a constant probability
  p gives exactly p).
  Blur: Gaussian, 11x11, sigma 5 (RISE's klen=11, nsig=5), separable, normalised to sum 1,
  depthwise (per channel) with torch conv2d and REPLICATE padding (RISE pads with zeros, which
  darkens the borders; with replicate a constant image blurs to itself).

Average Drop / Increase in Confidence (Grad-CAM++, Chattopadhyay et al., WACV 2018)
  Y = p(target | image), O = p(target | image * saliency_up) (per-pixel product, broadcast over
  channels);
    Average Drop            = mean_b max(0, Y - O) / Y * 100     PERCENT, lower is better
    Increase in Confidence  = mean_b 1[O > Y] * 100              PERCENT, higher is better
  as the Grad-CAM++ paper reports them. A sample with Y == 0 contributes a drop of 0.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Predict = Callable[[torch.Tensor], torch.Tensor]

BLUR_KERNEL = 11
BLUR_SIGMA = 5.0


def gaussian_blur(images: torch.Tensor, kernel_size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Separable, normalised Gaussian blur of (B, C, H, W) images, replicate padding, same size."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"blur kernel size must be odd and positive, got {kernel_size}")
    x = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum()).to(images.dtype).to(images.device)
    c, pad = images.shape[1], kernel_size // 2
    out = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    out = F.conv2d(out, g.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size), groups=c)
    return F.conv2d(out, g.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1), groups=c)


def _inputs(images, saliency_up, target) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(images).float()
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    saliency = torch.as_tensor(saliency_up).float().to(images.device)
    if saliency.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"saliency_up must be (B, H, W) = {(images.shape[0], *images.shape[2:])}, got {tuple(saliency.shape)}"
        )
    target = torch.as_tensor(target).long().to(images.device).reshape(-1)
    if target.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {target.shape[0]} targets")
    return images, saliency, target


def _probability(predict: Predict, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """p(target | x) as float64 on x's device, (N,)."""
    with torch.no_grad():
        probs = torch.as_tensor(predict(x))
    if probs.dim() != 2 or probs.shape[0] != x.shape[0]:
        raise ValueError(f"predict must return probabilities (N, C) for N={x.shape[0]}, got {tuple(probs.shape)}")
    probs = probs.detach().to(device=x.device, dtype=torch.float64)
    return probs.gather(1, target.view(-1, 1)).squeeze(1)


def _steps(n: int, steps: int, device) -> torch.Tensor:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.tensor([(i * n) // steps for i in range(steps + 1)], dtype=torch.long, device=device)


def _curve(predict, start, source, rank, ks, target, batch_size) -> torch.Tensor:
    """(B, S+1) target probability of `start` with its top-k (by `rank`) pixels taken from
    `source` ((B, C, H, W), or a 0-d tensor: a constant baseline), k over `ks`."""
    b_count, _, h, w = start.shape
    points = ks.shape[0]
    total = b_count * points
    out = torch.empty(total, dtype=torch.float64, device=start.device)
    for lo in range(0, total, batch_size):
        hi = min(lo + batch_size, total)
        j = torch.arange(lo, hi, device=start.device)  # flat (sample, step) index
        b, i = j // points, j % points
        mask = (rank[b] < ks[i].unsqueeze(1)).view(-1, 1, h, w)
        src = source if source.dim() == 0 else source[b]
        out[lo:hi] = _probability(predict, torch.where(mask, src, start[b]), target[b])
    return out.view(b_count, points)


def _auc(curve: torch.Tensor, ks: torch.Tensor, n: int) -> torch.Tensor:
    dk = (ks[1:] - ks[:-1]).to(torch.float64)
    return ((curve[:, 1:] + curve[:, :-1]) * dk).sum(1) / (2 * n)


def _curves(predict, images, saliency_up, target, steps, batch_size, baseline, blur_kernel, blur_sigma):
    images, saliency, target = _inputs(images, saliency_up, target)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    b_count, _, h, w = images.shape
    n = h * w
    ks = _steps(n, steps, images.device)
    order = torch.argsort(saliency.reshape(b_count, n), dim=1, descending=True, stable=True)
    rank = torch.argsort(order, dim=1)  # rank[b, p]: position of pixel p in the order (a permutation)
    fill = torch.tensor(float(baseline), dtype=images.dtype, device=images.device)
    deletion = _curve(predict, images, fill, rank, ks, target, batch_size)
    blurred = gaussian_blur(images, blur_kernel, blur_sigma)
    insertion = _curve(predict, blurred, images, rank, ks, target, batch_size)
    return ks, n, deletion, insertion


def deletion_insertion_curves(
    predict: Predict,
    images: torch.Tensor,
    saliency_up: torch.Tensor,
    target: torch.Tensor,
    steps: int = 20,
    batch_size: int = 64,
    baseline: float = 0.0,
    blur_kernel: int = BLUR_KERNEL,
    blur_sigma: float = BLUR_SIGMA,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RISE curves: (fractions (S+1,), deletion (B, S+1), insertion (B, S+1)), float64,
    fractions = k_i / n, the curves the target probability at each point."""
    ks, n, deletion, insertion = _curves(
        predict, images, saliency_up, target, steps, batch_size, baseline, blur_kernel, blur_sigma
    )
    return ks.to(torch.float64) / n, deletion, insertion


def deletion_insertion_auc(
    predict: Predict,
    images: torch.Tensor,
    saliency_up: torch.Tensor,
    target: torch.Tensor,
    steps: int = 20,
    batch_size: int = 64,
    baseline: float = 0.0,
    blur_kernel: int = BLUR_KERNEL,
    blur_sigma: float = BLUR_SIGMA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(deletion_auc (B,), insertion_auc (B,)) float64 in [0, 1] by the trapezoid rule over the
    fraction of pixels. Deletion: lower is better; insertion: higher is better."""
    ks, n, deletion, insertion = _curves(
        predict, images, saliency_up, target, steps, batch_size, baseline, blur_kernel, blur_sigma
    )
    return _auc(deletion, ks, n), _auc(insertion, ks, n)


def average_drop_increase(
    predict: Predict, images: torch.Tensor, saliency_up: torch.Tensor, target: torch.Tensor, batch_size: int = 64
) -> tuple[float, float]:
    """(Average Drop %, Increase in Confidence %) over the batch, both in PERCENT (0..100).
    saliency_up must lie in [0, 1] (it multiplies the image). Raises on an empty batch."""
    images, saliency, target = _inputs(images, saliency_up, target)
    if images.shape[0] == 0:
        raise ValueError("average drop is undefined on an empty batch")
    if saliency.min() < 0 or saliency.max() > 1:
        raise ValueError("saliency_up must lie in [0, 1]; upsample / normalise the CAM first")
    masked = images * saliency.unsqueeze(1)
    y = torch.cat([_probability(predict, images[i : i + batch_size], target[i : i + batch_size])
                   for i in range(0, images.shape[0], batch_size)])
    o = torch.cat([_probability(predict, masked[i : i + batch_size], target[i : i + batch_size])
                   for i in range(0, images.shape[0], batch_size)])
    drop = torch.where(y > 0, (y - o).clamp_min(0) / torch.where(y > 0, y, 1.0), 0.0)
    return drop.mean().item() * 100, (o > y).double().mean().item() * 100


def faithfulness_metrics(
    predict: Predict,
    images: torch.Tensor,
    saliency_up: torch.Tensor,
    target: torch.Tensor,
    steps: int = 20,
    batch_size: int = 64,
) -> dict:
    """Flat dict: `deletion_auc`, `insertion_auc` (batch means, in [0, 1]), `average_drop`,
    `increase_in_confidence` (PERCENT), `faithfulness_samples` (B). An empty batch gives None
    metrics and count 0."""
    n = int(torch.as_tensor(images).shape[0])
    if n == 0:
        return {"deletion_auc": None, "insertion_auc": None, "average_drop": None,
                "increase_in_confidence": None, "faithfulness_samples": 0}
    deletion, insertion = deletion_insertion_auc(predict, images, saliency_up, target, steps, batch_size)
    drop, increase = average_drop_increase(predict, images, saliency_up, target, batch_size)
    return {
        "deletion_auc": deletion.mean().item(),
        "insertion_auc": insertion.mean().item(),
        "average_drop": drop,
        "increase_in_confidence": increase,
        "faithfulness_samples": n,
    }
