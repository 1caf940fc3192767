"""Scene pieces shared by the synthetic benchmarks: background, distractors, the border decoy,
simulated annotators' heatmaps, position words and deterministic JPEG bytes.

The benchmark follows decoy-MNIST (Ross et al. 2017): the class lives in a target; a patch whose
grey level or hue encodes a class agrees with the label in most training images and is random
elsewhere, so a plain classifier can take the shortcut while a model whose saliency is pulled onto
the target cannot. Two geometries (params synthetic.<name>.geometry):

centre  the target near the image centre, the decoy in a border corner. The train-split mean map
        Ā is then the answer: KL(Â || Ā) alone says "not the corner".
varied  the target's centre drawn per axis from N(0.5, 0.2^2) of the image side (redrawn until
        the target fits: mildly centre-biased, as objects in photographs), its size over a wider
        range; the decoy anywhere that does not overlap the target (uniform, redrawn), and its
        hue kept >= 30 degrees away from every colour a class name or explanation uses, so the
        explanations never name the decoy's cue. Ā is then a weak prior, and what the
        explanations say that only the target shows is where it is.
"""

from __future__ import annotations

import colorsys
import io
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Distractor colours never used by a class colour, so the target stays well defined.
DISTRACTOR_COLOURS = [(205, 205, 205), (125, 125, 125), (150, 100, 60), (225, 150, 205), (0, 190, 190)]
SMALL_SHAPES = ("circle", "square", "triangle", "diamond", "cross")

DrawTarget = Callable[[ImageDraw.ImageDraw, float, tuple[int, int, int] | int], None]


def decoy_pixels(size: int, fraction: float) -> int:
    return max(4, round(size * fraction))


def border_width(size: int, decoy_fraction: float = 0.11) -> int:
    """The border strip that holds the decoy: distractors and targets stay inside it."""
    return decoy_pixels(size, decoy_fraction) + 2


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """A dark, noisy, slightly graded background: different in every image, never class-informative."""
    base = rng.uniform(20, 90, size=3)
    ramp = np.linspace(-1, 1, size)[None, :, None] * rng.uniform(-12, 12, size=3)
    pixels = base + ramp + rng.normal(0, 7, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, size: float, fill) -> None:
    r = size / 2
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        q = r * 0.85
        draw.rectangle((cx - q, cy - q, cx + q, cy + q), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "cross":
        t = r * 0.36
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, round(r * 0.35)))
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _overlaps(box, boxes, margin: float) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + margin and b[0] < x1 + margin and y0 < b[3] + margin and b[1] < y1 + margin for b in boxes)


def place_distractors(
    rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, count: int, occupied: list[tuple],
    border: int,
) -> None:
    """Small distractor shapes inside the inner region (never in the decoy border), not on the target."""
    lo, hi = border, size - border
    for _ in range(count):
        d = rng.uniform(0.08, 0.12) * size
        for _attempt in range(30):
            cx, cy = rng.uniform(lo + d / 2, hi - d / 2, size=2)
            box = (cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2)
            if not _overlaps(box, occupied, margin=2):
                colour = DISTRACTOR_COLOURS[rng.integers(len(DISTRACTOR_COLOURS))]
                draw_shape(draw, SMALL_SHAPES[rng.integers(len(SMALL_SHAPES))], cx, cy, d, colour)
                occupied.append(box)
                break


def decoy_level(class_index: int, num_classes: int) -> int:
    """Grey level of the decoy patch that stands for a class (decoy-MNIST style)."""
    return round(45 + 200 * class_index / max(1, num_classes - 1))


def decoy_fill(class_index: int, num_classes: int, style: str) -> tuple[int, int, int]:
    """grey: a grey level per class (subtle, as decoy-MNIST); colour: a saturated hue per class,
    the easiest feature in the image, so an unguided classifier takes the shortcut."""
    if style == "grey":
        level = decoy_level(class_index, num_classes)
        return (level, level, level)
    r, g, b = colorsys.hsv_to_rgb(class_index / num_classes, 1.0, 1.0)
    return (round(r * 255), round(g * 255), round(b * 255))


def draw_decoy(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, fill, pixels: int) -> None:
    """A framed square in a random corner of the border strip."""
    p = pixels
    x = 1 if rng.random() < 0.5 else size - p - 1
    y = 1 if rng.random() < 0.5 else size - p - 1
    draw.rectangle((x, y, x + p - 1, y + p - 1), fill=fill, outline=(0, 0, 0))


# varied geometry ----------------------------------------------------------------------------------
POSITION_SD = 0.2  # of the image side, per axis, around the centre
DECOY_HUE_MARGIN = 30  # degrees between a decoy hue and any colour the explanations name


def varied_centre(rng: np.random.Generator, size: int, half_extent: float) -> tuple[float, float]:
    """A target centre from N(0.5, POSITION_SD^2) per axis, redrawn until the target fits."""
    lo, hi = half_extent + 1, size - half_extent - 1
    for _ in range(100):
        cx, cy = rng.normal(0.5, POSITION_SD, size=2) * size
        if lo <= cx <= hi and lo <= cy <= hi:
            return float(cx), float(cy)
    return float(np.clip(cx, lo, hi)), float(np.clip(cy, lo, hi))


def decoy_hues(num_classes: int, named_hues: tuple[float, ...]) -> list[float]:
    """num_classes hues (degrees) spread evenly over the circle minus DECOY_HUE_MARGIN around named_hues."""
    def far(h: int) -> bool:
        return all(min(abs(h - a) % 360, 360 - abs(h - a) % 360) > DECOY_HUE_MARGIN for a in named_hues)

    allowed = [h for h in range(360) if far(h)]
    return [float(allowed[int((k + 0.5) * len(allowed) / num_classes)]) for k in range(num_classes)]


def varied_decoy_fill(class_index: int, num_classes: int, style: str, named_hues: tuple[float, ...]) -> tuple[int, int, int]:
    """grey as in the centre geometry; colour: a hue per class, away from every named colour."""
    if style == "grey":
        return decoy_fill(class_index, num_classes, style)
    r, g, b = colorsys.hsv_to_rgb(decoy_hues(num_classes, named_hues)[class_index] / 360.0, 1.0, 1.0)
    return (round(r * 255), round(g * 255), round(b * 255))


def place_decoy(rng: np.random.Generator, size: int, pixels: int, target_box: tuple) -> tuple[float, float, float, float]:
    """A uniform place for the decoy square that does not touch the target (2 px apart)."""
    for _ in range(200):
        x, y = rng.integers(1, size - pixels - 1, size=2, endpoint=True)
        box = (float(x), float(y), float(x + pixels - 1), float(y + pixels - 1))
        if not _overlaps(box, [target_box], margin=2):
            return box
    # a target too big to avoid by chance: the corner farthest from its centre
    tx, ty = (target_box[0] + target_box[2]) / 2, (target_box[1] + target_box[3]) / 2
    corners = [(1, 1), (size - pixels - 1, 1), (1, size - pixels - 1), (size - pixels - 1, size - pixels - 1)]
    x, y = max(corners, key=lambda c: (c[0] + pixels / 2 - tx) ** 2 + (c[1] + pixels / 2 - ty) ** 2)
    return (float(x), float(y), float(x + pixels - 1), float(y + pixels - 1))


def varied_position_phrase(cx: float, cy: float, size: int) -> str:
    """Where the target is, by thirds of the image."""
    fx, fy = cx / size, cy / size
    horiz = "left" if fx < 1 / 3 else "right" if fx > 2 / 3 else ""
    vert = "top" if fy < 1 / 3 else "bottom" if fy > 2 / 3 else ""
    if horiz and vert:
        return f"in the {vert} {horiz} of the image"
    if horiz:
        return f"on the {horiz} of the image"
    if vert:
        return f"at the {vert} of the image"
    return "in the middle of the image"


def compose_varied(
    rng: np.random.Generator,
    cfg,
    decoy_rgb: tuple[int, int, int],
    with_maps: bool,
    draw_target: DrawTarget,
    target_fill: tuple[int, int, int],
    target_box: tuple[float, float, float, float],
) -> tuple[bytes, np.ndarray | None, tuple[float, float, float, float]]:
    """compose() for the varied geometry; also returns the decoy's box."""
    s = cfg.image_size
    img = background(rng, s)
    draw = ImageDraw.Draw(img)
    draw_target(draw, 1.0, target_fill)
    decoy_box = place_decoy(rng, s, decoy_pixels(s, cfg.decoy_size), target_box)
    draw.rectangle(decoy_box, fill=decoy_rgb, outline=(0, 0, 0))
    place_distractors(rng, draw, s, cfg.distractors, [target_box, decoy_box], border=1)
    maps = annotator_maps(rng, draw_target, s, cfg.map_size) if with_maps else None
    return jpeg_bytes(img), maps, decoy_box


def annotator_maps(
    rng: np.random.Generator, draw_target: DrawTarget, image_size: int, map_size: int, annotators: int = 3
) -> np.ndarray:
    """Simulated human heatmaps: the target's silhouette, shifted and blurred differently per annotator.

    Returns float32 (annotators, map_size, map_size) with values in [0, 1].
    """
    scale = map_size / image_size
    out = np.zeros((annotators, map_size, map_size), dtype=np.float32)
    for k in range(annotators):
        mask = Image.new("L", (map_size, map_size), 0)
        draw_target(ImageDraw.Draw(mask), scale, 255)
        dx, dy = np.round(rng.normal(0, 0.03 * map_size, size=2)).astype(int)
        mask = mask.transform(mask.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy))
        mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.03, 0.07) * map_size))
        heat = np.asarray(mask, dtype=np.float32) / 255.0
        out[k] = heat * rng.uniform(0.6, 1.0)
    return out


def compose(
    rng: np.random.Generator,
    cfg,
    decoy_class: int,
    with_maps: bool,
    draw_target: DrawTarget,
    target_fill: tuple[int, int, int],
    target_box: tuple[float, float, float, float],
) -> tuple[bytes, np.ndarray | None]:
    """One benchmark image around a drawn target: background, target, distractors, decoy.

    Returns the JPEG bytes and, when with_maps, the annotators' heatmaps of the target.
    """
    s = cfg.image_size
    img = background(rng, s)
    draw = ImageDraw.Draw(img)
    draw_target(draw, 1.0, target_fill)
    place_distractors(rng, draw, s, cfg.distractors, [target_box], border_width(s, cfg.decoy_size))
    draw_decoy(rng, draw, s, decoy_fill(decoy_class, cfg.num_classes, cfg.decoy_style), decoy_pixels(s, cfg.decoy_size))
    maps = annotator_maps(rng, draw_target, s, cfg.map_size) if with_maps else None
    return jpeg_bytes(img), maps


def position_phrase(cx: float, cy: float, size: int) -> str:
    """Where the target is, in words, relative to the image centre."""
    fx, fy = cx / size, cy / size
    horiz = "left" if fx < 0.46 else "right" if fx > 0.54 else ""
    vert = "upper" if fy < 0.46 else "lower" if fy > 0.54 else ""
    if not horiz and not vert:
        return "in the center of the image"
    if horiz and vert:
        return f"in the {vert} {horiz} part of the center"
    if horiz:
        return f"just {horiz} of the center"
    return "just above the center" if vert == "upper" else "just below the center"


def jpeg_bytes(image: Image.Image) -> bytes:
    """JPEG with 4:4:4 chroma, so the decoy's grey level and the class colours survive compression."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92, subsampling=0)
    return buf.getvalue()
