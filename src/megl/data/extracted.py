"""Read the extraction and saliency outputs (data/<dataset>/), checking what is read.

Every later stage reads its inputs through here, so a file that was truncated, overwritten or
written by another version stops the stage with a DataError naming the file and the problem,
instead of a numpy traceback or, worse, a silent number (an all-zero GT map gives mIoU 0).
Checked: that each file can be read; shapes, dtypes and row counts against the manifest; class
ids against classes.json; maps finite, within [0, 1] and not empty; index rows within the maps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from megl.data.records import DataError

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("sample_id", "split", "image_path", "label", "class_id", "explanations", "has_visual", "visual_path")


def _npy(path: Path, mmap: bool = True) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing (re-run the stage that writes it: `dvc repro`)")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read as a .npy array, truncated or corrupt ({exc})") from None


def _json(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: missing (re-run the stage that writes it: `dvc repro`)")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def read_classes(data_dir: Path) -> list[str]:
    path = Path(data_dir) / "classes.json"
    classes = _json(path)
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{path}: expected a non-empty list of class names")
    if len(set(classes)) != len(classes):
        raise DataError(f"{path}: class names repeat")
    return classes


def read_manifest(data_dir: Path, columns: list[str] | None = None, n_classes: int | None = None) -> pd.DataFrame:
    """The manifest (all columns, or `columns`), checked: splits known, class ids in range."""
    path = Path(data_dir) / "manifest.parquet"
    if not path.is_file():
        raise DataError(f"{path}: missing (re-run extraction: `dvc repro extract@<dataset>`)")
    try:
        manifest = pd.read_parquet(path, columns=columns)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot be read as parquet, truncated or corrupt ({type(exc).__name__}: {exc})") from None
    missing = [c for c in (columns or MANIFEST_COLUMNS) if c not in manifest.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    if manifest.empty:
        raise DataError(f"{path}: no rows")
    if "split" in manifest:
        unknown = sorted(set(manifest["split"]) - set(SPLITS))
        if unknown:
            raise DataError(f"{path}: unknown split values {unknown}")
    if "class_id" in manifest and n_classes is not None:
        ids = manifest["class_id"].to_numpy()
        if ids.min() < 0 or ids.max() >= n_classes:
            raise DataError(f"{path}: class_id outside [0, {n_classes}) of classes.json (range {ids.min()}..{ids.max()})")
    if "explanations" in manifest:
        empty = int((manifest["explanations"].map(len) == 0).sum())
        if empty:
            raise DataError(f"{path}: {empty} rows without any explanation")
    return manifest


def open_images(data_dir: Path, rows: int) -> np.ndarray:
    """images.npy memory-mapped: (rows, S, S, 3) uint8, one image per manifest row."""
    path = Path(data_dir) / "images.npy"
    images = _npy(path)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise DataError(f"{path}: expected shape (N, S, S, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"{path}: expected dtype uint8, got {images.dtype}")
    if images.shape[0] != rows:
        raise DataError(f"{path}: {images.shape[0]} images for {rows} manifest rows (written by another extraction?)")
    return images


def _check_maps(path: Path, maps: np.ndarray, size: int, expected_rows: int) -> None:
    if maps.ndim != 3 or maps.shape[1:] != (size, size):
        raise DataError(f"{path}: expected shape (M, {size}, {size}), got {maps.shape}")
    if maps.shape[0] != expected_rows:
        raise DataError(f"{path}: {maps.shape[0]} maps, index.npy refers to {expected_rows}")
    if not np.issubdtype(maps.dtype, np.floating):
        raise DataError(f"{path}: expected float maps, got {maps.dtype}")
    values = np.asarray(maps, dtype=np.float32).reshape(len(maps), -1)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).any(axis=1).sum())
        raise DataError(f"{path}: {bad} maps hold NaN or infinite values")
    if len(values) and (values.min() < -1e-6 or values.max() > 1 + 1e-6):
        raise DataError(f"{path}: values outside [0, 1] (range {values.min():.4g}..{values.max():.4g})")
    empty = np.flatnonzero(values.max(axis=1, initial=0.0) <= 0) if len(values) else []
    if len(empty):
        raise DataError(f"{path}: {len(empty)} of {len(values)} ground-truth maps are empty (all zero), e.g. map {int(empty[0])}; "
                        "an empty map cannot be localised against (re-run `dvc repro saliency@<dataset>`)")


class Saliency:
    """data/<dataset>/saliency/ for one resolution: index.npy (manifest row -> map row, -1 without a
    map), maps_<R>.npy and mean_map_<R>.npy, checked against the manifest."""

    def __init__(self, data_dir: Path, size: int, rows: int, need_mean: bool = True) -> None:
        folder = Path(data_dir) / "saliency"
        meta = _json(folder / "meta.json")
        resolutions = meta.get("resolutions", []) if isinstance(meta, dict) else []
        if size not in resolutions:
            raise DataError(f"{folder}: no maps at {size} (have {resolutions}); add it to saliency.grid_sizes")
        index_path = folder / "index.npy"
        index = np.asarray(_npy(index_path, mmap=False))
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise DataError(f"{index_path}: expected a 1-D integer array, got {index.dtype} {index.shape}")
        if len(index) != rows:
            raise DataError(f"{index_path}: {len(index)} entries for {rows} manifest rows (written by another extraction?)")
        used = index[index >= 0]
        if index.min(initial=0) < -1 or len(np.unique(used)) != len(used):
            raise DataError(f"{index_path}: entries must be -1 or distinct map rows")
        maps_path = folder / f"maps_{size}.npy"
        maps = _npy(maps_path)
        n_maps = int(used.max()) + 1 if len(used) else 0
        _check_maps(maps_path, maps, size, max(n_maps, len(used)))
        self.index, self.maps, self.size = index, maps, size
        self.mean_map = None
        if need_mean:
            mean_path = folder / f"mean_map_{size}.npy"
            mean = np.asarray(_npy(mean_path, mmap=False))
            if mean.shape != (size, size) or not np.isfinite(mean).all() or mean.max(initial=0.0) <= 0:
                raise DataError(f"{mean_path}: expected a finite, non-empty ({size}, {size}) map, got shape {mean.shape}")
            self.mean_map = mean.astype(np.float32)

    def maps_for(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of `rows` that have a GT map, their maps)."""
        index = self.index[rows]
        has = index >= 0
        return has, np.asarray(self.maps[index[has]])
