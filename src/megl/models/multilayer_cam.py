"""MMEL's multi-layer explainer (docs/reference.md "The papers the explainers come from"): Grad-CAM at several depths of
the backbone, brought to the CAM grid and mixed with softmax-normalised learnable layer weights.

    M_l   = Grad-CAM before the ReLU at depth l (the deepest is today's CAM layer)
    M_l'  = M_l average-pooled to the CAM grid (earlier ResNet stages are finer), divided per sample
            by its largest |value| (layers differ in scale by orders of magnitude; without this the
            deepest layer would decide the mix whatever the weights)
    raw   = sum_l softmax(alpha)_l M_l'          alpha: one learnable logit per depth, zeros at init
    Â     = per-sample min-max of ReLU(raw)      (as for Grad-CAM: megl.models.gradcam.normalise)

Depths: ResNet, the outputs of the last `depths` stages; ViT, the patch tokens entering each of the
last `depths` blocks (megl.models.backbones). The weights train with the model when the explainer is
used in the explanation losses (train.explainer or a variant's `explainer: multilayer`); a model
trained with Grad-CAM has none, and its multi-layer explanation uses uniform weights (alpha = 0).

All depths' gradients come from one autograd call, in the graph like Grad-CAM's. In train mode the
ResNet's BatchNorm layers after an early stage couple samples in that stage's gradient (as for the
input gradients of RRR); at evaluation (running statistics) every sample has its own map.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from megl.models.gradcam import Mode, grad_cams


class MultiLayerCAM(nn.Module):
    def __init__(self, depths: int, eps: float = 1e-8) -> None:
        super().__init__()
        if depths < 1:
            raise ValueError(f"the multi-layer explainer needs at least one depth, got {depths}")
        self.depths = depths
        self.eps = eps
        self.layer_logits = nn.Parameter(torch.zeros(depths))

    def layer_weights(self) -> torch.Tensor:
        return self.layer_logits.softmax(0)

    def forward(self, stages: Sequence[torch.Tensor], scores: torch.Tensor, mode: Mode) -> torch.Tensor:
        """The mixed map before the ReLU, (B, h, w) at the deepest stage's grid."""
        if len(stages) != self.depths:
            raise ValueError(f"{self.depths} layer weights but {len(stages)} stages")
        maps = grad_cams(stages, scores, mode, relu=False)
        grid = maps[-1].shape[-2:]
        mixed = torch.zeros_like(maps[-1])
        for weight, m in zip(self.layer_weights(), maps):
            if m.shape[-2:] != grid:
                m = F.adaptive_avg_pool2d(m.unsqueeze(1), grid).squeeze(1)
            scale = m.flatten(1).abs().amax(1).view(-1, 1, 1) + self.eps
            mixed = mixed + weight * m / scale
        return mixed
