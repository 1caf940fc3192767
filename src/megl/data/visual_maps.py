"""Human visual-explanation maps: load any of the shapes seen in the wild, validate, aggregate.

Accepted files (docs/reference.md "The source datasets"; the release's exact format is unconfirmed):
  .npy  one array
  .npz  one array under any key, or several 2-D arrays of one shape (one per annotator)
  .png .jpg .jpeg .bmp .tif .tiff  an image mask (grey levels; a colour mask is converted to grey)
Accepted shapes: (K,H,W), (H,W,K) with 1 <= K <= 8 annotators, and (H,W). A sample may have several
files (the generic layout): each is read as above and their annotators are stacked.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

MAX_ANNOTATORS = 8
IMAGE_MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# A sample's several map files, as the manifest's visual_path column holds them.
VISUAL_PATH_SEPARATOR = "\n"


class BadMap(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _to_khw(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        # the annotator axis is the short one: at most MAX_ANNOTATORS and smaller than H and W
        k_first, k_last = array.shape[0], array.shape[2]
        if k_first <= MAX_ANNOTATORS and k_first < min(array.shape[1:]):
            return array
        if k_last <= MAX_ANNOTATORS and k_last < min(array.shape[:2]):
            return np.moveaxis(array, 2, 0)
    raise BadMap("visual_bad_shape", f"{name}: shape {array.shape} is not (K,H,W), (H,W,K) or (H,W)")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix.lower() in IMAGE_MASK_SUFFIXES:
            with Image.open(path) as img:
                img.load()
                grey = img if img.mode in ("1", "L", "I", "I;16", "F") else img.convert("L")
                return {"": np.asarray(grey, dtype=np.float32)}
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {key: np.asarray(loaded[key]) for key in loaded.files}
        return {"": np.asarray(loaded)}
    except (OSError, ValueError, EOFError, SyntaxError, zipfile.BadZipFile, Image.DecompressionBombError) as exc:
        raise BadMap("visual_unreadable", f"{path}: {exc}") from None


def _file_maps(path: Path) -> np.ndarray:
    arrays = _read_arrays(path)
    if not arrays:
        raise BadMap("visual_bad_shape", f"{path}: empty npz archive")
    if len(arrays) == 1:
        (array,) = arrays.values()
        maps = _to_khw(array, str(path))
    else:
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2 or len(arrays) > MAX_ANNOTATORS:
            raise BadMap("visual_bad_shape", f"{path}: npz members {sorted(arrays)} are not same-shape 2-D maps")
        maps = np.stack([arrays[k] for k in sorted(arrays)])
    if not np.issubdtype(maps.dtype, np.number) or np.issubdtype(maps.dtype, np.complexfloating):
        raise BadMap("visual_bad_shape", f"{path}: dtype {maps.dtype} is not real-valued")
    return maps.astype(np.float32)


def load_annotator_maps(paths: Path | Sequence[Path]) -> np.ndarray:
    """Return float32 (K,H,W) annotator maps or raise BadMap with a rejection reason."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    where = ", ".join(str(p) for p in paths)
    parts = [_file_maps(p) for p in paths]
    if len({part.shape[1:] for part in parts}) > 1:
        raise BadMap("visual_bad_shape", f"{where}: the files' maps differ in size {[part.shape[1:] for part in parts]}")
    if sum(len(part) for part in parts) > MAX_ANNOTATORS:
        raise BadMap("visual_bad_shape", f"{where}: more than {MAX_ANNOTATORS} annotator maps")
    maps = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if not np.isfinite(maps).all():
        raise BadMap("visual_nan", f"{where}: contains NaN or infinite values")
    if not _informative(maps).any():
        raise BadMap("visual_all_zero", f"{where}: every annotator map is constant")
    return maps


def _informative(maps: np.ndarray) -> np.ndarray:
    """Per annotator: does the map vary at all? A constant map says nothing about location."""
    flat = maps.reshape(len(maps), -1)
    return flat.max(axis=1) > flat.min(axis=1)


def aggregate(maps: np.ndarray, eps: float) -> tuple[np.ndarray, int]:
    """Min-max normalise each informative annotator, average, renormalise to [0, 1].

    Returns the (H,W) map and how many constant annotator maps were left out of the average.
    """
    keep = _informative(maps)
    kept = maps[keep].astype(np.float64)
    lo = kept.min(axis=(1, 2), keepdims=True)
    hi = kept.max(axis=(1, 2), keepdims=True)
    mean = ((kept - lo) / (hi - lo + eps)).mean(axis=0)
    return minmax(mean, eps).astype(np.float32), int((~keep).sum())


def minmax(array: np.ndarray, eps: float) -> np.ndarray:
    lo, hi = array.min(), array.max()
    return (array - lo) / (hi - lo + eps)
