"""Batched, differentiable Grad-CAM from the one forward pass (no hooks, no second forward).

    w_k   = mean_{i,j} d score / d A_k[i,j]          (channel weights)
    CAM   = ReLU(sum_k w_k A_k)                        (B, h, w)
    Â     = per-sample min-max of CAM, with eps        (what the explanation losses see)

`score` is the logit of the ground-truth class while training and of the predicted class at
evaluation. Because samples do not interact between the CAM layer and the logits (no BatchNorm
there), the gradient of the summed scores gives every sample its own Grad-CAM in one call.

Modes:
  create_graph  true double backprop: the loss also differentiates through the channel weights
  detached      weights are constants (the authors' prototype, RES): the loss reaches the model
                only through the activations; cheaper
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

Mode = Literal["create_graph", "detached"]


def grad_cam(activations: torch.Tensor, scores: torch.Tensor, mode: Mode = "create_graph", relu: bool = True) -> torch.Tensor:
    """Raw ReLU Grad-CAM, (B, h, w), for activations (B, C, h, w) and per-sample scores (B,).
    relu=False returns the weighted sum before the ReLU (the consistency KL's softmax input)."""
    return grad_cams([activations], scores, mode, relu)[0]


def grad_cams(activations: Sequence[torch.Tensor], scores: torch.Tensor, mode: Mode = "create_graph", relu: bool = True) -> list[torch.Tensor]:
    """grad_cam at several layers of the same forward pass, with one autograd call."""
    if mode not in ("create_graph", "detached"):
        raise ValueError(f"unknown Grad-CAM mode {mode!r}")
    grads = torch.autograd.grad(scores.sum(), list(activations), create_graph=mode == "create_graph", retain_graph=True)
    cams = []
    for a, g in zip(activations, grads):
        weights = g.mean(dim=(2, 3), keepdim=True)
        if mode == "detached":
            weights = weights.detach()
        cam = (weights * a).sum(dim=1)
        cams.append(torch.relu(cam) if relu else cam)
    return cams


def normalise(cam: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample min-max to [0, 1] (never over the batch). An all-zero CAM stays zero."""
    flat = cam.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo + eps)).view_as(cam)


def class_scores(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, classes.view(-1, 1)).squeeze(1)


def raw_map(out, scores: torch.Tensor, mode: Mode, explainer=None) -> torch.Tensor:
    """Â before ReLU and min-max for a classifier output: Grad-CAM at its CAM layer, or the
    explainer's (megl.models.multilayer_cam.MultiLayerCAM) mix over out.stages."""
    if explainer is None:
        return grad_cam(out.activations, scores, mode, relu=False)
    return explainer(out.stages, scores, mode)


def explain(classifier, pixels: torch.Tensor, classes: torch.Tensor | None = None, eps: float = 1e-8, explainer=None):
    """Evaluation-time explanation: logits, normalised CAM of `classes` (default: the predicted
    class) and the features, with gradients enabled just for the CAM and nothing kept in a graph.
    `explainer`: None for Grad-CAM at the CAM layer, or a megl.models.multilayer_cam.MultiLayerCAM."""
    with torch.enable_grad():
        out = classifier(pixels, cam_depths=1 if explainer is None else explainer.depths)
        targets = out.logits.argmax(1) if classes is None else classes
        scores = class_scores(out.logits, targets)
        cam = normalise(torch.relu(raw_map(out, scores, "detached", explainer)), eps)
    return out.logits.detach(), cam.detach(), out.features.detach()
