"""The MEGL module: classifier + Grad-CAM + explanation losses (+ the SDTG text head).

One forward pass computes the logits, the CAM of the ground-truth class (in the graph) and every
loss term the variant uses; the training loop only calls backward on `loss`. The visual
explanation-guided baselines (variant `loss`: GRADIA, HAICS, RES-G, RES-L, CDEP, RRR) are other
explanation terms of this same module (megl.losses), so every method trains in the one loop.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from megl import losses
from megl.config import VariantConfig
from megl.models.gradcam import class_scores, explain, normalise, raw_map
from megl.models.multilayer_cam import MultiLayerCAM


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
        image_size: int | None = None,
        explainer: str = "gradcam",
        explainer_layers: int = 4,
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
        self.cam_mode = variant.cam_mode or cam_mode
        self.cam_eps = cam_eps
        self.consistency_input = consistency_input
        self.consistency_temperature = consistency_temperature
        self.image_size = image_size
        # MMEL's multi-layer Â: its layer weights are parameters of the model (trained, exported)
        self.explainer = None
        if (variant.explainer or explainer) == "multilayer":
            self.explainer = MultiLayerCAM(min(explainer_layers, classifier.max_cam_depths), cam_eps)
        self.mask_transform = None
        if variant.loss == "res_l":
            if image_size is None:
                raise ValueError("RES-L needs the image size for its learned mask transform")
            self.mask_transform = losses.LearnedMaskTransform(image_size, mean_map.shape[-1])

    @property
    def cam_depths(self) -> int:
        return 1 if self.explainer is None else self.explainer.depths

    def explain(self, pixels: torch.Tensor, classes: torch.Tensor | None = None, explainer=None):
        """megl.models.gradcam.explain with this model's explainer (or another one, e.g. a
        uniform MultiLayerCAM for a model trained with Grad-CAM): logits, Â, features."""
        return explain(self.classifier, pixels, classes, self.cam_eps, self.explainer if explainer is None else explainer)

    @property
    def needs_cam(self) -> bool:
        v = self.variant
        return v.visual or v.consistency or v.text or v.loss in ("gradia", "haics", "res_g", "res_l")

    def forward(self, batch: dict) -> StepOutput:
        """batch: megl.data.dataset.collate's dict on the model's device."""
        pixels, labels, has_map = batch["pixels"], batch["label"], batch["has_map"]
        if self.variant.loss == "rrr":
            pixels = pixels.detach().requires_grad_(True)  # the penalty differentiates w.r.t. the input
        out = self.classifier(pixels, cam_depths=self.cam_depths if self.needs_cam else 1)
        terms = {"pred": losses.prediction_loss(out.logits, labels)}
        cam = raw = None
        if self.needs_cam:
            # the ground-truth class while training: the explanation of the right answer is supervised
            raw = raw_map(out, class_scores(out.logits, labels), self.cam_mode, self.explainer)
            cam = normalise(torch.relu(raw), self.cam_eps)
        loss = self.variant.loss
        if loss == "megl" and (self.variant.visual or self.variant.consistency):
            terms["visual"] = self.lambda_visual * losses.explanation_loss(
                cam, batch["gt_map"], has_map, self.mean_map, self.variant, self.cam_eps,
                raw_cam=raw, consistency_input=self.consistency_input, temperature=self.consistency_temperature,
            )
        elif loss != "megl":
            terms[loss] = self.variant.weight * self._baseline_term(batch, pixels, out, raw)
        if self.variant.text:
            ids, mask = (t.to(pixels.device) for t in self.text_head.encode(batch["explanation"]))
            terms["textual"] = self.lambda_textual * self.text_head(pixels, cam, out.features, ids, mask)
        return StepOutput(loss=sum(terms.values()), terms=terms, logits=out.logits, cam=cam)

    def _baseline_term(self, batch: dict, pixels: torch.Tensor, out, raw: torch.Tensor | None) -> torch.Tensor:
        """The unweighted explanation loss of a visual-EGL baseline (../shared/BASELINES.md)."""
        loss, labels, has_map, input_map = self.variant.loss, batch["label"], batch["has_map"], batch["input_map"]
        if loss == "rrr":
            # Σ_k log p_k; with BatchNorm in train mode a sample's input gradient also carries the
            # small batch-statistics coupling (Ross et al.'s MLP had none)
            (grads,) = torch.autograd.grad(out.logits.log_softmax(1).sum(), pixels, create_graph=True)
            irrelevant = 1 - losses.positive_region(input_map)
            # Ross et al. sum both terms over the batch; CE here is a batch mean, so is the penalty
            return (losses.rrr_penalty(grads, irrelevant) * has_map.to(grads.dtype)).mean()
        if loss == "cdep":
            from megl.models.contextual_decomposition import cd_logits

            background = 1 - losses.positive_region(input_map)
            rel, irrel = cd_logits(self.classifier, batch["pixels"], background)
            return losses.annotated_mean(losses.cdep_penalty(rel, irrel, labels), has_map)
        # the RES family: RES.py's linear normalisation of the raw Grad-CAM (min-max, no ReLU)
        cam = normalise(raw, self.cam_eps)
        target = losses.positive_at_grid(input_map, cam.shape[-1])
        if loss == "gradia":
            return losses.annotated_mean(losses.gradia_loss(cam, target), has_map)
        if loss == "haics":
            return losses.annotated_mean(losses.haics_loss(cam, target), has_map)
        if loss == "res_g":
            transformed = losses.scale_to_max(losses.gaussian_blur_3x3(target))
        else:  # res_l
            transformed = self.mask_transform(losses.positive_region(input_map))
        return losses.res_loss(cam, target, transformed, has_map, self.variant.eta)

    def predict_batch(self, batch: dict) -> torch.Tensor:
        """Predicted class ids (the validation accuracy of the training loop)."""
        return self.classifier(batch["pixels"]).logits.argmax(1)
