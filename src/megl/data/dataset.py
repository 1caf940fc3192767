"""The extracted dataset as a torch Dataset: image, label, GT map at one CAM grid, one explanation.

Reads the extraction and saliency outputs (manifest, images.npy memory-mapped, saliency/*).
One of a sample's explanations is drawn per epoch from a generator seeded by (seed, epoch,
row), so the draw does not depend on worker count, batch order or resumption.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class ExplanationDataset(Dataset):
    def __init__(self, data_dir: Path, split: str, grid: int, seed: int = 0) -> None:
        data_dir = Path(data_dir)
        manifest = pd.read_parquet(data_dir / "manifest.parquet")
        self.rows = np.flatnonzero((manifest["split"] == split).to_numpy())
        if len(self.rows) == 0:
            raise ValueError(f"{data_dir / 'manifest.parquet'}: no samples in split {split!r}")
        self.manifest = manifest
        self.classes = json.loads((data_dir / "classes.json").read_text())
        self.images = np.load(data_dir / "images.npy", mmap_mode="r")
        saliency = data_dir / "saliency"
        grids = json.loads((saliency / "meta.json").read_text())["resolutions"]
        if grid not in grids:
            raise ValueError(f"{saliency}: no maps at grid {grid} (have {grids}); add it to saliency.grid_sizes")
        self.index = np.load(saliency / "index.npy")
        self.maps = np.load(saliency / f"maps_{grid}.npy", mmap_mode="r")
        self.mean_map = torch.from_numpy(np.load(saliency / f"mean_map_{grid}.npy"))
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
        texts = self.manifest["explanations"].iat[row]
        pick = np.random.default_rng([self.seed, self.epoch, row]).integers(len(texts))
        return {
            "row": row,
            "pixels": pixels,
            "label": int(self.manifest["class_id"].iat[row]),
            "gt_map": gt,
            "has_map": k >= 0,
            "explanation": str(texts[pick]),
        }


def collate(items: list[dict]) -> dict:
    return {
        "row": torch.tensor([it["row"] for it in items]),
        "pixels": torch.stack([it["pixels"] for it in items]),
        "label": torch.tensor([it["label"] for it in items]),
        "gt_map": torch.stack([it["gt_map"] for it in items]),
        "has_map": torch.tensor([it["has_map"] for it in items]),
        "explanation": [it["explanation"] for it in items],
    }
