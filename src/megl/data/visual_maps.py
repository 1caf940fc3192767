"""Human visual-explanation maps: load any of the shapes seen in the wild, validate, aggregate.

Accepted files (REFERENCE.md; the release's exact format is unconfirmed):
  .npy  one array
  .npz  one array under any key, or several 2-D arrays of one shape (one per annotator)
Accepted shapes: (K,H,W), (H,W,K) with 1 <= K <= 8 annotators, and (H,W).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

MAX_ANNOTATORS = 8


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


def load_annotator_maps(path: Path) -> np.ndarray:
    """Return float32 (K,H,W) annotator maps or raise BadMap with a rejection reason."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {key: np.asarray(loaded[key]) for key in loaded.files}
        else:
            arrays = {"": np.asarray(loaded)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BadMap("visual_unreadable", f"{path}: {exc}") from None
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
    maps = maps.astype(np.float32)
    if not np.isfinite(maps).all():
        raise BadMap("visual_nan", f"{path}: contains NaN or infinite values")
    if not _informative(maps).any():
        raise BadMap("visual_all_zero", f"{path}: every annotator map is constant")
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
