"""Image decoding for extraction: megl's path (JPEG draft mode + threads) vs a plain PIL loop.

Real COCO / MPII photos are ~640x480; extraction shrinks them to the model's input size. The
baseline decodes every pixel and resizes, one image at a time, as most preprocessing scripts do.
Prints one JSON object; ratios are measured in the same run.

    .venv/bin/python benchmarks/extract_images.py [--images 400] [--size 224] [--workers 2]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from megl.data.images import decode_many


def make_photos(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        # smooth colour fields plus noise compress like photos, not like flat test cards
        low = rng.integers(0, 255, size=(12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((640, 480), Image.Resampling.BICUBIC)
        pixels = np.asarray(img, dtype=np.int16) + rng.integers(-20, 20, size=(480, 640, 3))
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def baseline(paths: list[Path], size: int) -> list[np.ndarray]:
    out = []
    for p in paths:
        with Image.open(p) as img:
            out.append(np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), args.images)
        baseline(paths[:20], args.size)  # warm the page cache and PIL
        t0 = time.perf_counter()
        ref = baseline(paths, args.size)
        t1 = time.perf_counter()
        ours = decode_many([[p] for p in paths], args.size, args.workers)
        t2 = time.perf_counter()
    diff = float(np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(ref, ours)]))
    print(json.dumps({
        "benchmark": "extract_images",
        "images": args.images,
        "source_size": [640, 480],
        "size": args.size,
        "workers": args.workers,
        "baseline_seconds": round(t1 - t0, 3),
        "megl_seconds": round(t2 - t1, 3),
        "speedup": round((t1 - t0) / (t2 - t1), 2),
        "mean_abs_pixel_difference": round(diff, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
