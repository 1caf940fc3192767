"""The MEGL module: classifier + Grad-CAM + explanation losses (+ the SDTG text head).

One forward pass computes the logits, the CAM of the ground-truth class (in the graph) and every
loss term the variant uses; the training loop only calls backward on `loss`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from megl.config import VariantConfig
from megl.losses import explanation_loss, prediction_loss
from megl.models.gradcam import class_scores, grad_cam, normalise


@dataclasses.dataclass
class StepOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # each weighted-in term, for logging and the NaN check
    logits: torch.Tensor
    cam: torch.Tensor | None


class MEGL(nn.Module):
    def __init__(
        self,
        classifier: nn.Module,
        text_head: nn.Module | None,
        variant: VariantConfig,
        mean_map: torch.Tensor,
        *,
        lambda_visual: float,
        lambda_textual: float,
        cam_mode: str,
        cam_eps: float,
        consistency_input: str = "softmax",
        consistency_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if variant.text and text_head is None:
            raise ValueError("a variant with the text term needs a text head")
        self.classifier = classifier
        self.text_head = text_head
        self.variant = variant
        self.register_buffer("mean_map", mean_map.float(), persistent=False)
        self.lambda_visual = lambda_visual
        self.lambda_textual = lambda_textual
        self.cam_mode = cam_mode
        self.cam_eps = cam_eps
        self.consistency_input = consistency_input
        self.consistency_temperature = consistency_temperature

    @property
    def needs_cam(self) -> bool:
        v = self.variant
        return v.visual or v.consistency or v.text

    def forward(self, pixels, labels, gt_map, has_map, input_ids=None, attention_mask=None) -> StepOutput:
        out = self.classifier(pixels)
        terms = {"pred": prediction_loss(out.logits, labels)}
        cam = None
        if self.needs_cam:
            # the ground-truth class while training: the explanation of the right answer is supervised
            raw = grad_cam(out.activations, class_scores(out.logits, labels), self.cam_mode, relu=False)
            cam = normalise(torch.relu(raw), self.cam_eps)
        if self.variant.visual or self.variant.consistency:
            terms["visual"] = self.lambda_visual * explanation_loss(
                cam, gt_map, has_map, self.mean_map, self.variant, self.cam_eps,
                raw_cam=raw, consistency_input=self.consistency_input, temperature=self.consistency_temperature,
            )
        if self.variant.text:
            terms["textual"] = self.lambda_textual * self.text_head(pixels, cam, out.features, input_ids, attention_mask)
        return StepOutput(loss=sum(terms.values()), terms=terms, logits=out.logits, cam=cam)
