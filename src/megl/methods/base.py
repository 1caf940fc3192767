"""What a method is: one registry entry (megl.methods) with its loss, the Grad-CAM it needs, where it
applies, how the tables name it, and its hyperparameter search space.

A variant in params.yaml names its method (`method:`, default megl) and sets that method's knobs;
everything that needs to know what a method does asks its entry, never its name.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Callable, Literal, Union

if TYPE_CHECKING:
    import torch
    from torch import nn

    from megl.config import VariantConfig


# --- search spaces (DomainBed's hparams_registry: one distribution per hyperparameter) ---------------


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """log10 of the value uniform in [log10 low, log10 high] (a weight, a learning rate)."""

    low: float
    high: float

    def check(self, where: str) -> None:
        if not 0 < self.low < self.high:
            raise ValueError(f"{where}: LogUniform needs 0 < low < high, got {self.low}, {self.high}")

    def sample(self, u: float) -> float:
        """The value at quantile u in [0, 1) (a seeded sampler supplies u)."""
        return 10 ** (math.log10(self.low) + u * (math.log10(self.high) - math.log10(self.low)))


@dataclasses.dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def check(self, where: str) -> None:
        if not self.low < self.high:
            raise ValueError(f"{where}: Uniform needs low < high, got {self.low}, {self.high}")

    def sample(self, u: float) -> float:
        return self.low + u * (self.high - self.low)


Distribution = Union[LogUniform, Uniform]

# Every method's runs share this part of the space: the same budget for the classifier's step size.
SHARED_SPACE: dict[str, Distribution] = {"train.lr": LogUniform(1e-4, 1e-2)}


# --- one training step, as an explanation loss sees it ----------------------------------------------


@dataclasses.dataclass
class StepInputs:
    """What a method's loss reads in one step (megl.models.megl builds it)."""

    batch: dict  # megl.data.dataset.collate's dict on the device
    pixels: "torch.Tensor"  # the classifier's input (requires grad when the method needs input gradients)
    out: object  # the classifier's output: logits, features, activations
    raw_cam: "torch.Tensor | None"  # Grad-CAM of the method's class before ReLU (None: the method needs none)
    cam: "torch.Tensor | None"  # ReLU, then per-sample min-max: Â in [0, 1]
    model: "nn.Module"  # the MEGL module: its variant, text head, mean map, λs, loss state
    minmax: Callable[["torch.Tensor"], "torch.Tensor"]  # per-sample min-max with the model's eps (no ReLU)
    # contextual decomposition of the classifier: (pixels, region) -> (rel, irrel) logits (CDEP)
    decompose: Callable[["torch.Tensor", "torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]


Terms = Callable[[StepInputs], dict[str, "torch.Tensor"]]


# --- the entry --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Method:
    """One method. `terms` returns its weighted loss terms (besides cross-entropy), keyed by the name
    the logs and train.json use."""

    name: str
    display: str  # the tables' Method column (`label` may name a variant by its settings instead)
    group: Literal["megl", "explanation", "mllm"]  # MEGL and its ablations | visual-EGL baselines | MLLM baselines
    reference: str  # the paper or code the formula follows (docs/methods.md says more)
    model: Literal["classifier", "mllm"] = "classifier"  # which model contract trains it
    terms: Terms | None = None
    # the Grad-CAM the loss reads: None (none), "train" (params train.cam_mode), "detached" (channel
    # weights constant, as RES.py and Captum compute it), "create_graph" (true double backprop)
    cam: Literal["train", "detached", "create_graph"] | None = None
    cam_class: Literal["label", "predicted"] = "label"  # whose Grad-CAM: the true class, or the predicted one
    input_gradients: bool = False  # the loss differentiates w.r.t. the input pixels
    # backbone families it has a faithful form on (None: every one); elsewhere its runs are n/a, and
    # `elsewhere` says why
    backbones: tuple[str, ...] | None = None
    elsewhere: str = ""
    # trained once per dataset, in the runs of the grid's first backbone (it has no classifier backbone)
    once_per_dataset: bool = False
    writes_explanations: Callable[["VariantConfig"], bool] = lambda v: False  # Table 3 rows
    # the trainable state of the loss (RES-L's mask transform), built from (image size, CAM grid)
    state: Callable[[int, int], "nn.Module"] | None = None
    # the variant keys this method reads besides `method` (validation refuses the others)
    knobs: frozenset[str] = frozenset()
    # search space: param path -> distribution; "variant.<key>" is this variant's own block
    space: dict[str, Distribution] = dataclasses.field(default_factory=dict)
    # which keys of `space` a variant's runs read (MEGL without its text term never reads λ_textual)
    space_when: Callable[["VariantConfig", str], bool] = lambda v, key: True
    uses_cam_when: Callable[["VariantConfig"], bool] = lambda v: True
    label: Callable[["VariantConfig"], str] | None = None

    def row_label(self, variant: "VariantConfig") -> str:
        """How the tables name a variant of this method."""
        return self.label(variant) if self.label is not None else self.display

    def uses_cam(self, variant: "VariantConfig") -> bool:
        return self.cam is not None and self.uses_cam_when(variant)

    def cam_mode(self, variant: "VariantConfig", train_mode: str) -> str:
        """The variant's own cam_mode, else the method's, else train.cam_mode."""
        return variant.cam_mode or (train_mode if self.cam in (None, "train") else self.cam)

    def search_space(self, variant: "VariantConfig | None" = None) -> dict[str, Distribution]:
        """The shared space and the method's own; for a variant, only the keys its runs read."""
        own = {k: d for k, d in self.space.items() if variant is None or self.space_when(variant, k)}
        return SHARED_SPACE | own
