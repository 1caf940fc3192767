"""Ground-truth saliency: aggregate the annotators' maps per sample, resize, and build the mean map.

Outputs (data/<dataset>/saliency/), row-aligned with the manifest through index.npy:
  index.npy            (N,) int32: row of the sample in the maps_* arrays, -1 without a map
  maps_<R>.npy         (M, R, R) float32 in [0, 1] for each CAM grid R and the image size
  mean_map_<R>.npy     (R, R) float32: the mean of the TRAIN split's maps only (Ā for L_dc)
  meta.json            resolutions, counts
Every stored map is min-max normalised at its own resolution.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
from PIL import Image

from megl.atomic import atomic_dir, save_npy, write_json
from megl.config import DatasetConfig, SaliencyConfig
from megl.data.extracted import open_images, read_manifest
from megl.data.records import VISUAL_REJECT_REASONS, DataError
from megl.data.visual_maps import VISUAL_PATH_SEPARATOR, BadMap, aggregate, load_annotator_maps, minmax


def resize_area(array: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D float map to size x size: area averaging when shrinking (PIL BOX), bilinear when growing."""
    h, w = array.shape
    shrinking = size <= h and size <= w
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    return np.asarray(img.resize((size, size), resample), dtype=np.float32)


def build_saliency(
    name: str,
    cfg: DatasetConfig,
    sal: SaliencyConfig,
    data_dir: Path,
    out_dir: Path,
    report_path: Path,
) -> dict:
    manifest = read_manifest(data_dir, columns=["sample_id", "split", "has_visual", "visual_path"])
    image_size = int(open_images(data_dir, len(manifest)).shape[1])
    resolutions = sorted(set(sal.grid_sizes) | {image_size})

    index = np.full(len(manifest), -1, dtype=np.int32)
    maps: dict[int, list[np.ndarray]] = {r: [] for r in resolutions}
    splits: list[str] = []
    rejected = {reason: 0 for reason in sorted(VISUAL_REJECT_REASONS)}
    constant_annotators = 0
    for row in manifest[manifest["has_visual"]].itertuples():
        paths = [Path(p) for p in row.visual_path.split(VISUAL_PATH_SEPARATOR)]
        paths = [p if p.is_absolute() else cfg.raw_path / p for p in paths]
        try:
            annotators = load_annotator_maps(paths)
        except BadMap as exc:
            # extraction validated this file: it changed since, or the raw dir moved
            if cfg.on_bad_sample == "error":
                raise DataError(f"{exc.detail} (sample {row.sample_id!r}; re-run extraction?)") from None
            rejected[exc.reason] += 1
            continue
        combined, dropped = aggregate(annotators, sal.eps)
        constant_annotators += dropped
        index[row.Index] = len(splits)
        splits.append(row.split)
        for r in resolutions:
            maps[r].append(minmax(resize_area(combined, r), sal.eps).astype(np.float32))

    train = np.array([s == "train" for s in splits], dtype=bool)
    if not train.any():
        raise DataError(
            f"{data_dir / 'manifest.parquet'}: no train-split sample has a visual map, so the mean map "
            "for the consistency loss cannot be computed without leaking val/test maps"
        )
    counts = collections.Counter(splits)
    meta = {
        "dataset": name,
        "resolutions": resolutions,
        "grid_sizes": sorted(sal.grid_sizes),
        "image_size": image_size,
        "maps": len(splits),
        "maps_by_split": {s: counts.get(s, 0) for s in ("train", "val", "test")},
        "mean_map_from": "train",
    }
    with atomic_dir(out_dir) as tmp:
        save_npy(tmp / "index.npy", index)
        for r in resolutions:
            stack = np.stack(maps[r]) if maps[r] else np.zeros((0, r, r), np.float32)
            save_npy(tmp / f"maps_{r}.npy", stack)
            save_npy(tmp / f"mean_map_{r}.npy", stack[train].mean(axis=0).astype(np.float32))
        write_json(tmp / "meta.json", meta)

    report = {
        "dataset": name,
        "maps_in": int(manifest["has_visual"].sum()),
        "maps_aggregated": len(splits),
        "maps_rejected": sum(rejected.values()),
        "maps_rejected_by_reason": rejected,
        "constant_annotator_maps_excluded": constant_annotators,
        "maps_by_split": meta["maps_by_split"],
        "mean_map_train_maps": int(train.sum()),
        "resolutions": resolutions,
    }
    write_json(report_path, report)
    return report
