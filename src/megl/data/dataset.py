"""The extracted dataset as a torch Dataset: image, label, GT map at one CAM grid and at the image
size (the baselines that read the full-resolution mask: RES-L, CDEP, RRR), one explanation.

Reads the extraction and saliency outputs (manifest, images.npy memory-mapped, saliency/*),
checked by megl.data.extracted (a damaged file stops with a DataError naming it).
One of a sample's explanations is drawn per epoch from a generator seeded by (seed, epoch,
row), so the draw does not depend on worker count, batch order or resumption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from megl.data.extracted import Saliency, open_images, read_classes, read_manifest
from megl.data.records import DataError


class ExplanationDataset(Dataset):
    def __init__(self, data_dir: Path, split: str, grid: int, seed: int = 0) -> None:
        data_dir = Path(data_dir)
        self.classes = read_classes(data_dir)
        manifest = read_manifest(data_dir, n_classes=len(self.classes))
        self.rows = np.flatnonzero((manifest["split"] == split).to_numpy())
        if len(self.rows) == 0:
            raise DataError(f"{data_dir / 'manifest.parquet'}: no samples in split {split!r}")
        self.manifest = manifest
        self.images = open_images(data_dir, len(manifest))
        saliency = Saliency(data_dir, grid, len(manifest))
        self.index, self.maps = saliency.index, saliency.maps
        self.mean_map = torch.from_numpy(saliency.mean_map)
        self.image_size = size = self.images.shape[1]
        self.input_maps = saliency.maps if size == grid else Saliency(data_dir, size, len(manifest), need_mean=False).maps
        self.grid = grid
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> np.ndarray:
        return self.manifest["class_id"].to_numpy()[self.rows]

    def explanations(self, i: int) -> list[str]:
        return list(self.manifest["explanations"].iat[self.rows[i]])

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        pixels = torch.from_numpy(np.array(self.images[row])).permute(2, 0, 1).float() / 255.0
        k = int(self.index[row])
        gt = torch.from_numpy(np.array(self.maps[k])) if k >= 0 else torch.zeros(self.grid, self.grid)
        full = torch.from_numpy(np.array(self.input_maps[k])) if k >= 0 else torch.zeros(self.image_size, self.image_size)
        texts = self.manifest["explanations"].iat[row]
        pick = np.random.default_rng([self.seed, self.epoch, row]).integers(len(texts))
        return {
            "row": row,
            "pixels": pixels,
            "label": int(self.manifest["class_id"].iat[row]),
            "gt_map": gt,
            "input_map": full,
            "has_map": k >= 0,
            "explanation": str(texts[pick]),
            # the VQA question (VQA-X), "" where the source has none (ACT-X, generic): the MLLM baselines' prompt
            "question": "" if pd.isna(q := self.manifest["question"].iat[row]) else str(q),
        }


def collate(items: list[dict]) -> dict:
    return {
        "row": torch.tensor([it["row"] for it in items]),
        "pixels": torch.stack([it["pixels"] for it in items]),
        "label": torch.tensor([it["label"] for it in items]),
        "gt_map": torch.stack([it["gt_map"] for it in items]),
        "input_map": torch.stack([it["input_map"] for it in items]),
        "has_map": torch.tensor([it["has_map"] for it in items]),
        "explanation": [it["explanation"] for it in items],
        "question": [it["question"] for it in items],
    }
