"""Decode, resize and store images as one memory-mappable uint8 array, row-aligned with the manifest."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageFile

from megl.atomic import atomic_path

# A truncated JPEG must be an error, never silently grey-filled.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImage(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of any Pillow mode: transparency over white (as a viewer shows it, where a plain
    convert would keep whatever colour the transparent pixels hold), 16-bit and float grey scaled
    from their value range (a plain convert clips them to 255)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        peak = float(values.max()) if values.size else 0.0
        if img.mode == "F":
            top = 1.0
        elif img.mode.startswith("I;16") or 255 < peak <= 65535:  # Pillow opens 16-bit PNGs as I;16 or I
            top = 65535.0
        else:
            top = max(peak, 255.0)
        return Image.fromarray(np.clip(values / top * 255 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def decode(candidates: Sequence[Path], size: int) -> np.ndarray:
    """Decode the first existing candidate to RGB and resize (no crop) to size x size.

    No crop, so ground-truth maps resized the same way stay aligned with the pixels. JPEG draft
    mode lets libjpeg decode at a reduced DCT scale that is still >= size: same result quality,
    several times faster on large photos.
    """
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise BadImage("missing_image", f"not found: {', '.join(str(p) for p in candidates)}")
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))
            rgb = to_rgb(img)
            rgb.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage("corrupt_image", f"{path}: {exc}") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def decode_many(items: Sequence[Sequence[Path]], size: int, workers: int) -> list[np.ndarray | BadImage]:
    """decode() for each item, in order; failures come back as BadImage values, not raised."""

    def one(candidates: Sequence[Path]) -> np.ndarray | BadImage:
        try:
            return decode(candidates, size)
        except BadImage as exc:
            return exc

    if workers == 1:
        return [one(c) for c in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, items, chunksize=64))


def write_store(path: Path, images: Sequence[np.ndarray], size: int) -> None:
    """images.npy: (N, size, size, 3) uint8, written through a temp file and renamed."""
    with atomic_path(path) as tmp:
        store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(images), size, size, 3))
        for i, image in enumerate(images):
            store[i] = image
        store.flush()
        del store


def open_store(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")
