"""`megl explain MODEL_DIR IMAGE_OR_FOLDER...`: what a user does with a trained model.

Per image: the predicted class and its probability, the generated explanation (a model with a text
head) and, written to --out, an overlay PNG of the explainer's map of the predicted class at the
image's own size and a JSON of the same. Images are read and resized exactly as extraction does
(megl.data.images.decode: RGB, no crop), so any size and mode works (grey, palette, RGBA on white,
16-bit). A file that cannot be read is reported by name and the others are still explained; the
exit status is then 1. Weights load only from the model's safetensors (megl.models.load).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from megl.atomic import atomic_path, write_json
from megl.data.images import BadImage, decode, to_rgb
from megl.data.records import DataError
from megl.visualize import heat_overlay

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
TOP_K = 5


def image_paths(inputs: list[Path]) -> list[Path]:
    """The files named, and the images directly inside the folders named (sorted)."""
    paths = []
    for p in inputs:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{p}: no images in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        elif p.exists():
            paths.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return paths


def load_model(model_dir: Path, device: torch.device):
    from megl.models.load import explainer_name, load_exported

    model, config = load_exported(model_dir)
    if not model.has_cam:
        raise DataError(f"{model_dir}: {config['variant']} has no saliency map (an MLLM baseline); megl explain "
                        "explains the classifier methods (MEGL, its ablations, the visual-EGL baselines)")
    return model.to(device), config, explainer_name(config)


def explain_image(model, config: dict, path: Path, device: torch.device) -> dict:
    size = config["image_size"]
    pixels = torch.tensor(decode([path], size)).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
    logits, cam, features = model.explain(pixels)
    probs = logits.softmax(1)[0].cpu()
    top = probs.topk(min(TOP_K, len(probs)))
    classes = config["classes"]
    result = {
        "predicted": classes[int(top.indices[0])],
        "probability": round(float(top.values[0]), 4),
        "top": [{"class": classes[int(i)], "probability": round(float(p), 4)} for p, i in zip(top.values, top.indices)],
        "explanation": model.text_head.generate(pixels, cam, features)[0] if model.text_head is not None else None,
        "cam": np.round(cam[0].cpu().numpy().astype(np.float64), 4).tolist(),
    }
    return result


def overlay(path: Path, cam: list) -> Image.Image:
    """The map over the image as the user has it (its size; RGB as the model saw it)."""
    with Image.open(path) as img:
        full = np.asarray(to_rgb(img))
    return Image.fromarray(heat_overlay(full, np.asarray(cam, dtype=np.float32)))


def output_names(paths: list[Path]) -> list[str]:
    """One name per image for its outputs: the file name, numbered where two images share one."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        seen[p.name] = seen.get(p.name, 0) + 1
        names.append(p.name if seen[p.name] == 1 else f"{p.stem}-{seen[p.name]}{p.suffix}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="megl explain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="an exported model: models/<dataset>/<backbone>/<variant>/s<seed>")
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders of images")
    parser.add_argument("--out", type=Path, default=Path("explained"), help="where the overlay PNGs and JSONs go (default: explained/)")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    # peft calls a transformers API deprecated in 5.x (as pyproject's pytest filter says): noise here
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    try:
        paths = image_paths(args.images)
        model, config, explainer = load_model(args.model_dir, device)
    except (FileNotFoundError, DataError, ValueError) as exc:
        print(f"megl explain: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for path, name in zip(paths, output_names(paths)):
        try:
            result = explain_image(model, config, path, device)
            picture = overlay(path, result["cam"])
        except (BadImage, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            failed += 1
            print(f"{path}: cannot be read as an image ({getattr(exc, 'detail', exc)})", file=sys.stderr)
            continue
        png = args.out / f"{name}.cam.png"
        with atomic_path(png) as tmp:
            picture.save(tmp, format="PNG")
        record = {"image": str(path), "model": str(args.model_dir), "explainer": explainer, **result, "overlay": png.name}
        write_json(args.out / f"{name}.json", record)
        line = f"{path}: {result['predicted']} (p = {result['probability']:.3f})"
        if result["explanation"] is not None:
            line += f' "{result["explanation"]}"'
        print(f"{line}\n  overlay: {png}", flush=True)
    if failed:
        print(f"megl explain: {failed} of {len(paths)} images could not be read (named above)", file=sys.stderr)
    return 1 if failed else 0
