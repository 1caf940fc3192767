"""Two Grad-CAM losses of the XIL typology (Friedrich et al., Nature Machine Intelligence 2023;
`ml-research/A-Typology-for-Exploring-the-Mitigation-of-Shortcut-Behavior`, xil_methods/xil_loss.py),
which the MEGL paper does not compare:

- HINT (Selvaraju et al. 2019, in the typology's image-classification form, not the original VQA
  ranking loss over region proposals): reward the right region. The Grad-CAM of the TRUE class,
  min-max normalised to [0, 1] with no ReLU (`util.norm_saliencies_fast`), against the relevant
  mask: per sample Σ_cells (Â − M_relevant)², the typology's MSE with reduction "sum".
- RRR-G (Schramowski et al. 2020, RRR on Grad-CAM): penalise the wrong region. The Grad-CAM of the
  PREDICTED class, normalised the same way, inside the irrelevant mask: per sample
  Σ_cells (M_irrelevant ⊙ Â)².

Both read the human map's positive region, resized down to the CAM grid by area (the typology
resizes its mask with torchvision's Resize; area is that for these integer factors), irrelevant =
1 − relevant, and average the per-sample values over the annotated samples of the batch (the
typology's "mean" reduction divides the batch sum by the batch size; here, as for every baseline,
samples without a map weigh 0). Captum's LayerGradCam takes plain gradients, so the channel weights
are constants: cam `detached`. Not copied: the typology switches the model to eval() to take the
CAM (BatchNorm statistics change mid-step) and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megl.losses import annotated_mean, positive_region
from megl.methods.base import LogUniform, Method, StepInputs


def relevant_at_grid(input_map: torch.Tensor, grid: int) -> torch.Tensor:
    """The positive region A > 0 of the (B, H, W) human map, area-resized to the CAM grid: in [0, 1]."""
    return F.adaptive_avg_pool2d(positive_region(input_map).unsqueeze(1), grid).squeeze(1)


def hint_loss(cam: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """HINT per sample: Σ (Â − M)² over the grid, (B, h, w) x (B, h, w) -> (B,)."""
    return (cam - relevant).pow(2).flatten(1).sum(1)


def rrr_g_loss(cam: torch.Tensor, irrelevant: torch.Tensor) -> torch.Tensor:
    """RRR-G per sample: Σ (M_irrelevant ⊙ Â)² over the grid -> (B,)."""
    return (irrelevant * cam).pow(2).flatten(1).sum(1)


def hint_terms(x: StepInputs) -> dict[str, torch.Tensor]:
    cam = x.minmax(x.raw_cam)
    relevant = relevant_at_grid(x.batch["input_map"], cam.shape[-1])
    return {"hint": x.model.variant.weight * annotated_mean(hint_loss(cam, relevant), x.batch["has_map"])}


def rrr_g_terms(x: StepInputs) -> dict[str, torch.Tensor]:
    cam = x.minmax(x.raw_cam)
    irrelevant = 1 - relevant_at_grid(x.batch["input_map"], cam.shape[-1])
    return {"rrr_g": x.model.variant.weight * annotated_mean(rrr_g_loss(cam, irrelevant), x.batch["has_map"])}


# The typology's rates are per dataset (FMNIST: HINT 1e-5 on its upsampled 28x28 maps, RRR-G 10) and
# some rates train unstably: a search space, not a constant.
_XIL = dict(group="explanation", cam="detached", knobs=frozenset({"weight", "cam_mode", "explainer"}),
            space={"variant.weight": LogUniform(1e-3, 10.0)})

HINT = Method(name="hint", display="HINT", reference="Selvaraju et al. 2019, in Friedrich et al. 2023's form",
              terms=hint_terms, cam_class="label", **_XIL)
RRR_G = Method(name="rrr_g", display="RRR-G", reference="Schramowski et al. 2020, in Friedrich et al. 2023's form",
               terms=rrr_g_terms, cam_class="predicted", **_XIL)
METHODS = (HINT, RRR_G)
