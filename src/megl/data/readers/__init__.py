"""One reader per raw layout; each returns parsed samples plus counted rejections."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from megl.data.readers import actx, generic, vqax
from megl.data.paths import safe_join
from megl.data.records import DataError, ReadResult

Reader = Callable[[Path, Path, Path], ReadResult]

READERS: dict[str, Reader] = {
    "vqax_park": vqax.read_park,
    "vqax_nlx": vqax.read_nlx,
    "actx_park": actx.read_park,
    "actx_nlx": actx.read_nlx,
    "generic": generic.read,
}


def read_layout(layout: str, raw_dir: Path, image_root: Path, visual_dir: Path) -> ReadResult:
    if layout not in READERS:
        raise ValueError(f"unknown layout {layout!r}; known: {sorted(READERS)}")
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: raw data directory not found (layout {layout})")
    return READERS[layout](raw_dir, image_root, visual_dir)


def image_candidates(layout: str, image_root: Path, name: str) -> list[Path]:
    """Where an image may sit under the root: as named, or (COCO) inside train2014/ val2014/."""
    rels = vqax.image_candidates(name) if layout.startswith("vqax") else [Path(name)]
    return [safe_join(image_root, str(rel)) for rel in rels]
