"""The one contract every model a run trains keeps: the MEGL module (megl.models.megl, every
classifier method of the registry) and the MLLM baselines (megl.models.llava_baseline). The training
loop, the evaluation, `megl explain` and the loaders call these and nothing else, so none of them
asks which kind of model it holds.

    forward(batch) -> StepOutput          the loss and its named terms (the loop backpropagates `loss`)
    predict_batch(batch) -> class ids     validation accuracy
    param_groups(lr, text_lr)             the optimiser's groups (each part at its learning rate)
    export_weights() / load_weights(w)    what model.safetensors holds, and back
    tokenizer                             saved beside the weights when the model has one (else None)
    gallery(val_set, n, device)           an image of CAM overlays (None without a CAM) and a table
    predict_split(test_set, batch, device, explainer, text) -> Predictions    the test split
    describe(config, num_classes)         test.json's fields naming the model (tiny or real weights)
    timed_calls(batch), size()            what Table 5 times at batch 1 (classify; classify + explain), and counts
    has_cam, lower_hypotheses             a saliency map to score; lower-case generations before scoring
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

NO_CLASS = "(no class)"  # the predicted label of an answer that names no class


@dataclasses.dataclass
class StepOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # each weighted-in term, for logging and the NaN check
    logits: torch.Tensor | None = None
    cam: torch.Tensor | None = None


@dataclasses.dataclass
class Predictions:
    """A model's test split, in the dataset's order."""

    rows: np.ndarray  # manifest rows
    labels: np.ndarray
    preds: np.ndarray  # class ids; -1 where an answer names no class
    generated: list[str] | None = None  # explanations, when the model writes them
    cams: np.ndarray | None = None  # predicted-class maps at the CAM grid, when the model has one
    probs: np.ndarray | None = None
    unparsed: int | None = None  # answers that name no class (MLLM baselines)


def gallery_samples(val_set, n: int, device) -> tuple[list[int], list[dict], torch.Tensor]:
    """The gallery's samples: the first n validation samples with a GT map, then the first others
    (the same samples in every run): their indices, items and pixels on `device`."""
    has_map = val_set.index[val_set.rows] >= 0
    picks = (list(map(int, has_map.nonzero()[0])) + list(map(int, (~has_map).nonzero()[0])))[:n]
    items = [val_set[i] for i in picks]
    return picks, items, torch.stack([it["pixels"] for it in items]).to(device)
