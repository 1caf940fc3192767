"""REX-style grounding of generated explanations (docs/reference.md "The papers the explainers come
from"; docs/evaluation.md "Grounding"): are the words of an explanation true of where the model
looked and of the image?

Positions. An explanation names a position in a phrase about the image or its centre ("in the
top left of the image", "on the right of the image", "just above the center"; POSITION_PHRASES),
with the words left / right, top / upper / above, bottom / lower / below and centre / center /
middle. They define a region of the image in coordinates x, y in [0, 1] (y downwards), per axis:
  left: x < 1/2          right: x >= 1/2          (the same for top / bottom on y)
  centre with no side named on that axis: 1/3 <= x <= 2/3 (the middle third)
  both sides named on one axis ("left ... right"): the empty region (the text contradicts itself)
An explanation names a position when it constrains at least one axis. For each such explanation
  text - CAM      the share of the predicted-class CAM's mass (image size, min-max) inside the
                  region; `grounding_cam_chance` is the region's area, what a uniform CAM gets
                  (a flat CAM, all zero after min-max, counts as uniform)
  text - target   whether the true target's centre (synthetic benchmark: synthetic_truth.json)
                  lies in the region
Attributes. Colour words and the synthetic benchmark's shapes (by name or by the phrase its
explanations use, "is perfectly round"); an explanation that names any agrees with the truth when
every colour and shape it names is the true class's.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import torch

from megl.data.synthetic.objects import SHAPE_WORDS
from megl.evaluate.localisation import upsample

SIDES = {"left": ("x", -1), "right": ("x", 1), "top": ("y", -1), "upper": ("y", -1), "above": ("y", -1),
         "bottom": ("y", 1), "lower": ("y", 1), "below": ("y", 1)}
COLOUR_WORDS = {"red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey", "gray"}


@dataclasses.dataclass(frozen=True)
class Region:
    """Per axis: None (not named), -1 / 1 (a side), 0 (the middle third) or 2 (contradictory)."""

    x: int | None
    y: int | None

    @property
    def named(self) -> bool:
        return self.x is not None or self.y is not None

    def mask(self, height: int, width: int) -> np.ndarray:
        """(height, width) bool: the pixels whose centres lie in the region."""
        ys = (np.arange(height) + 0.5) / height
        xs = (np.arange(width) + 0.5) / width
        return _axis(self.y, ys)[:, None] & _axis(self.x, xs)[None, :]

    def contains(self, x: float, y: float) -> bool:
        return bool(_axis(self.x, np.array([x]))[0] and _axis(self.y, np.array([y]))[0])


def _axis(side: int | None, t: np.ndarray) -> np.ndarray:
    if side is None:
        return np.ones_like(t, dtype=bool)
    if side == -1:
        return t < 0.5
    if side == 1:
        return t >= 0.5
    if side == 0:
        return (t >= 1 / 3) & (t <= 2 / 3)
    return np.zeros_like(t, dtype=bool)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


# A position is a phrase about the image or its centre ("in the top left of the image", "just
# left of the center", "just above the center"), not any side word: "one arm is raised above the
# head" or "the upper body" say nothing about where in the image the figure is.
POSITION_PHRASES = (
    re.compile(r"\b((?:(?:top|bottom|upper|lower|left|right|middle|center|centre|central)\s+){1,2})(?:part\s+)?"
               r"of\s+the\s+(?:image|picture|photo|frame|center|centre)\b"),
    re.compile(r"\b(above|below)\s+the\s+(?:center|centre)\b"),
)


def named_region(text: str) -> Region:
    sides: dict[str, set[int]] = {"x": set(), "y": set()}
    centre = False
    for pattern in POSITION_PHRASES:
        for match in pattern.finditer(" ".join(_words(text))):
            centre |= "center" in match.group(0) or "centre" in match.group(0) or "middle" in match.group(0)
            for w in match.group(1).split():
                if w in SIDES:
                    axis, side = SIDES[w]
                    sides[axis].add(side)

    def axis(name: str) -> int | None:
        s = sides[name]
        if len(s) > 1:
            return 2
        if s:
            return next(iter(s))
        return 0 if centre else None

    return Region(axis("x"), axis("y"))


def named_attributes(text: str) -> tuple[set[str], set[str]]:
    """(colours, shapes) an explanation names."""
    words = _words(text)
    colours = {w for w in words if w in COLOUR_WORDS}
    rest, shapes = f" {' '.join(words)} ", set()
    for shape, phrase in SHAPE_WORDS.items():  # the phrases first: "looks like a tilted square" is a diamond
        if f" {phrase} " in rest:
            shapes.add(shape)
            rest = rest.replace(f" {phrase} ", " ")
    return colours, shapes | {s for s in SHAPE_WORDS if s in rest.split()}


def grounding_metrics(generated: list[str], cams: np.ndarray | None, size: int, class_names: list[str],
                      target_centres: np.ndarray | None = None) -> dict:
    """generated[i] explains test sample i: its predicted-class CAM cams[i] ((N, h, w), brought to
    the image side `size` as the localisation metrics do; None for a model without one, the MLLM
    baselines), its true class name class_names[i] and, on the synthetic benchmark, the true
    target's centre target_centres[i] = (x, y) in [0, 1]. Shares over the explanations that name
    a position (or an attribute); None where none does, absent where the input is."""
    n = len(generated)
    if (cams is not None and len(cams) != n) or len(class_names) != n:
        raise ValueError(f"{n} explanations, {None if cams is None else len(cams)} CAMs and {len(class_names)} class names")
    mass, area, hits, named = [], [], [], []
    attr_hits = []
    for i, text in enumerate(generated):
        region = named_region(text)
        if region.named:
            named.append(i)
            if cams is not None:
                cam = upsample(torch.as_tensor(cams[i : i + 1]), size)[0].double().numpy()
                mask = region.mask(size, size)
                total = cam.sum()
                area.append(float(mask.mean()))
                # a flat CAM (zero after min-max) points nowhere: its share is the region's area
                mass.append(float(cam[mask].sum() / total) if total > 0 else area[-1])
            if target_centres is not None:
                hits.append(region.contains(*target_centres[i]))
        colours, shapes = named_attributes(text)
        if colours or shapes:
            true_colours, true_shapes = named_attributes(class_names[i])
            attr_hits.append(colours <= true_colours and shapes <= true_shapes)
    out = {
        "grounding_named": round(len(named) / n, 6) if n else None,
        "grounding_attributes": _mean(attr_hits),
        "grounding_attributes_named": round(len(attr_hits) / n, 6) if n else None,
    }
    if cams is not None:
        out |= {"grounding_cam": _mean(mass), "grounding_cam_chance": _mean(area)}
    if target_centres is not None:
        out["grounding_target"] = _mean(hits)
    return out


def _mean(values: list) -> float | None:
    return round(float(np.mean(values)), 6) if values else None


def synthetic_truth(params, dataset: str) -> tuple[dict, int] | None:
    """(per-sample truth, the drawn image's side in pixels) of a synthetic benchmark dataset (its
    raw folder holds synthetic_truth.json), else None."""
    raw_dir = params.dataset(dataset).raw_path
    truth_file = raw_dir / "synthetic_truth.json"
    drawn = [c.image_size for c in params.synthetic.values() if Path(c.out_dir).resolve() == raw_dir.resolve()]
    if not truth_file.is_file() or not drawn:
        return None
    return json.loads(truth_file.read_text())["samples"], drawn[0]


def target_centres(params, dataset: str, sample_ids: list[str]) -> np.ndarray | None:
    """(N, 2) centres (x, y) in [0, 1] of the true targets, or None off the synthetic benchmark."""
    found = synthetic_truth(params, dataset)
    if found is None:
        return None
    truth, size = found
    boxes = np.array([truth[s]["target_box"] for s in sample_ids], dtype=np.float64)
    # the box is the drawn target's extent around its centre (the centre its position phrase describes)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1) / size
