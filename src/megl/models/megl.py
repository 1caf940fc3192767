"""The MEGL module: classifier + Grad-CAM + the method's explanation loss (+ the SDTG text head).

One forward pass computes the logits, the Grad-CAM the method reads (in the graph) and every loss
term; the training loop only calls backward on `loss`. Which terms, on which CAM, comes from the
variant's registry entry (megl.methods): MEGL's own terms and every visual explanation-guided
baseline train in this one module and the one loop. It keeps the model contract
(megl.models.contract) for the classifier methods.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from megl import methods
from megl.config import VariantConfig
from megl.losses import prediction_loss
from megl.methods.megl_terms import consistency_target_map
from megl.models.contract import Predictions, StepOutput
from megl.models.gradcam import class_scores, explain, normalise, raw_map
from megl.models.multilayer_cam import MultiLayerCAM


class MEGL(nn.Module):
    has_cam = True
    lower_hypotheses = False  # the tiny text head writes lower case itself

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
        tokenizer=None,
        visual_l1: str = "mean",
        consistency_target: str = "mean_map",
    ) -> None:
        super().__init__()
        if variant.text and text_head is None:
            raise ValueError("a variant with the text term needs a text head")
        self.method = methods.get(variant.method)
        self.classifier = classifier
        self.text_head = text_head
        self.tokenizer = tokenizer
        self.variant = variant
        self.register_buffer("mean_map", mean_map.float(), persistent=False)
        self.register_buffer("consistency_map", consistency_target_map(mean_map.float(), consistency_target), persistent=False)
        self.lambda_visual = lambda_visual
        self.lambda_textual = lambda_textual
        self.cam_mode = self.method.cam_mode(variant, cam_mode)
        self.cam_eps = cam_eps
        self.consistency_input = consistency_input
        self.consistency_temperature = consistency_temperature
        self.visual_l1 = visual_l1
        self.image_size = image_size
        # MMEL's multi-layer Â: its layer weights are parameters of the model (trained, exported)
        self.explainer = None
        if (variant.explainer or explainer) == "multilayer":
            self.explainer = MultiLayerCAM(min(explainer_layers, classifier.max_cam_depths), cam_eps)
        # the loss's own trainable state (RES-L's mask transform): trained, checkpointed, exported
        self.loss_state = None
        if self.method.state is not None:
            if image_size is None:
                raise ValueError(f"{self.method.name} needs the image size for its loss state")
            self.loss_state = self.method.state(image_size, mean_map.shape[-1])

    @property
    def cam_depths(self) -> int:
        return 1 if self.explainer is None else self.explainer.depths

    def explain(self, pixels: torch.Tensor, classes: torch.Tensor | None = None, explainer=None):
        """megl.models.gradcam.explain with this model's explainer (or another one, e.g. a
        uniform MultiLayerCAM for a model trained with Grad-CAM): logits, Â, features."""
        return explain(self.classifier, pixels, classes, self.cam_eps, self.explainer if explainer is None else explainer)

    @property
    def needs_cam(self) -> bool:
        return self.method.uses_cam(self.variant)

    def forward(self, batch: dict) -> StepOutput:
        """batch: megl.data.dataset.collate's dict on the model's device."""
        pixels, labels = batch["pixels"], batch["label"]
        if self.method.input_gradients:
            pixels = pixels.detach().requires_grad_(True)  # the penalty differentiates w.r.t. the input
        out = self.classifier(pixels, cam_depths=self.cam_depths if self.needs_cam else 1)
        terms = {"pred": prediction_loss(out.logits, labels)}
        cam = raw = None
        if self.needs_cam:
            # while training: the true class's map (the explanation of the right answer is supervised),
            # or the predicted class's for a method that penalises what the model looks at (RRR-G)
            classes = labels if self.method.cam_class == "label" else out.logits.detach().argmax(1)
            raw = raw_map(out, class_scores(out.logits, classes), self.cam_mode, self.explainer)
            cam = normalise(torch.relu(raw), self.cam_eps)
        if self.method.terms is not None:
            terms |= self.method.terms(methods.StepInputs(
                batch, pixels, out, raw, cam, self, minmax=lambda t: normalise(t, self.cam_eps), decompose=self._decompose,
            ))
        return StepOutput(loss=sum(terms.values()), terms=terms, logits=out.logits, cam=cam)

    def _decompose(self, pixels: torch.Tensor, region: torch.Tensor):
        from megl.models.contextual_decomposition import cd_logits

        return cd_logits(self.classifier, pixels, region)

    def predict_batch(self, batch: dict) -> torch.Tensor:
        """Predicted class ids (the validation accuracy of the training loop)."""
        return self.classifier(batch["pixels"]).logits.argmax(1)

    # --- the rest of the model contract --------------------------------------------------------------

    def param_groups(self, lr: float, text_lr: float) -> list[dict]:
        """The classifier and the loss's state at lr; the text head at text_lr."""
        text_params = set(self.text_head.parameters()) if self.text_head is not None else set()
        groups = [{"params": [p for p in self.parameters() if p.requires_grad and p not in text_params], "lr": lr}]
        if text_params:
            groups.append({"params": [p for p in self.text_head.parameters() if p.requires_grad], "lr": text_lr})
        return groups

    def export_weights(self) -> dict[str, torch.Tensor]:
        """Everything but what a rebuild loads from local checkpoints (SDTGHead.checkpoint_keys):
        random-init parts are saved even when frozen."""
        weights = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        skip = self._checkpoint_keys()
        return {k: v for k, v in weights.items() if k not in skip}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """The exported weights back; the rest must be what the local checkpoints gave."""
        missing, unexpected = self.load_state_dict(weights, strict=False)
        missing = sorted(set(missing) - self._checkpoint_keys())
        if unexpected or missing:
            raise ValueError(f"missing {missing[:5]}, unexpected {unexpected[:5]}")

    def _checkpoint_keys(self) -> set[str]:
        return {f"text_head.{k}" for k in self.text_head.checkpoint_keys()} if self.text_head is not None else set()

    def gallery(self, val_set, n: int, device) -> tuple[np.ndarray | None, dict[str, list]]:
        """CAM overlays against GT maps, and generated vs reference explanations, for the first n
        validation samples with a GT map (then the first others): the same samples in every run."""
        from megl.models.contract import gallery_samples
        from megl.visualize import overlay_grid

        picks, items, pixels = gallery_samples(val_set, n, device)
        self.eval()
        logits, cam, features = self.explain(pixels)
        images = (pixels.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        labels = [val_set.classes[it["label"]] for it in items]
        predicted = [val_set.classes[int(c)] for c in logits.argmax(1)]
        image = overlay_grid(images, cam.cpu().numpy(), np.stack([it["gt_map"].numpy() for it in items]),
                             np.array([it["has_map"] for it in items]), labels, predicted)
        table = {
            "sample": [val_set.manifest["sample_id"].iat[it["row"]] for it in items],
            "label": labels,
            "predicted": predicted,
            "references": [" | ".join(val_set.explanations(i)) for i in picks],
        }
        if self.text_head is not None:
            table["generated"] = self.text_head.generate(pixels, cam, features)
        return image, table

    def predict_split(self, test_set, batch_size: int, device, explainer=None, text: bool = True) -> Predictions:
        """Logits, predicted-class CAMs (the model's explainer, or `explainer`) and (with a text head
        and `text`) greedy explanations for the test split."""
        from megl.data.dataset import collate
        from megl.progress import progress

        out = {"rows": [], "labels": [], "preds": [], "probs": [], "cams": []}
        generated = [] if self.text_head is not None and text else None
        loader = DataLoader(test_set, batch_size=batch_size, collate_fn=collate)
        for batch in progress(loader, len(loader), f"predict {len(test_set)} images", unit="batch"):
            pixels = batch["pixels"].to(device)
            logits, cam, features = self.explain(pixels, explainer=explainer)
            out["rows"].append(batch["row"])
            out["labels"].append(batch["label"])
            out["preds"].append(logits.argmax(1).cpu())
            out["probs"].append(logits.softmax(1).cpu())
            out["cams"].append(cam.cpu())
            if generated is not None:
                generated += self.text_head.generate(pixels, cam, features)
        arrays = {k: torch.cat(v).numpy() for k, v in out.items()}
        return Predictions(arrays["rows"], arrays["labels"], arrays["preds"], generated, arrays["cams"], arrays["probs"])

    def describe(self, config: dict, num_classes: int) -> dict:
        """What the tables need to say which model a number comes from (tiny or real weights)."""
        from megl.models.load import explainer_name

        backbone = config["backbone_params"]
        fields = {
            "backbone_profile": backbone["profile"],
            "backbone_pretrained": backbone.get("pretrained_path") is not None,
            "num_classes": num_classes,
            "explainer": explainer_name(config),
        }
        if self.text_head is not None:
            fields["text_head_profile"] = config["text_head"].get("profile", "tiny")
        return fields

    def timed_calls(self, batch: dict):
        """Table 5's two calls at batch 1: the classifier alone (no post-processing, as the paper
        times it), and with the CAM and the generated text."""
        image = batch["pixels"]

        def classify():
            with torch.no_grad():
                self.classifier(image)

        def classify_and_explain():
            logits, cam, features = self.explain(image)
            if self.text_head is not None:
                self.text_head.generate(image, cam, features)

        return classify, classify_and_explain

    def size(self) -> tuple[int, int, torch.dtype]:
        """(classifier parameters, with the text head, dtype)."""
        params = sum(p.numel() for p in self.classifier.parameters())
        total = params + (sum(p.numel() for p in self.text_head.parameters()) if self.text_head is not None else 0)
        return params, total, next(self.classifier.parameters()).dtype
