"""Why does explanation guidance not show on the tiny ViT? Controlled runs that separate the causes.

Each probe trains with the pipeline's own loop (megl.train.train) on one dataset and scores the
test split (accuracy; mIoU of the predicted-class CAM), changing one thing at a time:

  data     decoy:    the extracted benchmark (corner decoy = label on every train image)
           no_decoy: the same images with the border strip that holds the decoy blanked in every
                     split, so the decoy shortcut is gone: the backbone's ceiling on the target
  model    vit:      the pipeline's tiny ViT (patch 8, 64-dim, 4 blocks, CLS head; CAM = the tokens
                     entering the last block)
           vit_conv: a ViT that can learn this task from ~2,000 images: a convolutional stem in place
                     of the patch projection ("early convolutions", Xiao et al. 2021), 96-dim, 3 blocks
           cam_at:   where its CAM is taken: `entering_last` (as the pipeline), `stem` (the stem's
                     tokens, before any attention), or `final_mean` (a mean-pooled head with the CAM on
                     the final tokens, so the CAM is an exact decomposition of the logit, as for ResNet)

The probe models replace megl.models.backbones.build_classifier inside this script only; nothing in
the pipeline changes. Prints JSON and writes benchmarks/results/vit_probe.json with --out.

    .venv/bin/python benchmarks/vit_probe.py --out benchmarks/results/vit_probe.json

Needs the extracted datasets (`make run` or `dvc repro saliency@object_me`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import megl.models.load as load_module  # noqa: E402
import megl.train as train_module  # noqa: E402
from megl.atomic import write_json  # noqa: E402
from megl.config import load_params  # noqa: E402
from megl.data.synthetic.scene import border_width  # noqa: E402
from megl.models import backbones  # noqa: E402
from megl.models.load import load_exported  # noqa: E402
from megl.layout import RunKey, data_dir, run_layout  # noqa: E402
from megl.train import train  # noqa: E402
from method_seeds import score_test_split, scoped_params  # noqa: E402  (this script's folder is on sys.path)
from transformers import ViTConfig  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Probe:
    name: str
    data: str  # decoy | no_decoy
    backbone: str  # resnet18 | vit | vit_conv
    variant: str
    cam_at: str = "entering_last"
    train: tuple = ()  # (key, value) overrides of the train block


PROBES = [
    # 1. capacity: can the backbone learn the target at all when there is no shortcut?
    Probe("resnet18 no decoy", "no_decoy", "resnet18", "baseline"),
    Probe("vit no decoy", "no_decoy", "vit", "baseline"),
    Probe("vit_conv no decoy", "no_decoy", "vit_conv", "baseline", train=(("lr", 3e-4),)),
    # 2. CAM scale: a LayerNorm'd ViT's raw Grad-CAM is small, so softmax(CAM / 1) is near uniform
    Probe("vit megl T=1", "decoy", "vit", "megl"),
    Probe("vit megl T=0.05", "decoy", "vit", "megl", train=(("consistency_temperature", 0.05),)),
    # 3. with a ViT that can learn the target: does guidance cut the shortcut?
    Probe("vit_conv baseline", "decoy", "vit_conv", "baseline", train=(("lr", 3e-4),)),
    *[
        Probe(f"vit_conv megl cam={at}", "decoy", "vit_conv", "megl", at,
              train=(("lr", 3e-4), ("consistency_temperature", 0.05)))
        for at in ("entering_last", "stem", "final_mean")
    ],
]


class ProbeViT(backbones.ViTClassifier):
    """The pipeline's ViT forward with a choice of stem, size, pooling and CAM layer."""

    def __init__(self, num_classes: int, conv_stem: bool, cam_at: str) -> None:
        cfg = backbones.BackboneConfig("vit_b16", "tiny")
        if conv_stem:
            vit = ViTConfig(image_size=64, patch_size=8, hidden_size=96, num_hidden_layers=3, num_attention_heads=4,
                            intermediate_size=192, attn_implementation="eager")
            with _patched(backbones, "vit_config", lambda profile: vit):
                super().__init__(cfg, num_classes)
            d = vit.hidden_size
            # three 3x3 stride-2 convs take 64 px to the 8x8 patch grid (each token sees ~15 px)
            self.body.embeddings.patch_embeddings.projection = nn.Sequential(
                nn.Conv2d(3, d // 4, 3, 2, 1), nn.BatchNorm2d(d // 4), nn.ReLU(),
                nn.Conv2d(d // 4, d // 2, 3, 2, 1), nn.BatchNorm2d(d // 2), nn.ReLU(),
                nn.Conv2d(d // 2, d, 3, 2, 1), nn.BatchNorm2d(d), nn.ReLU(),
                nn.Conv2d(d, d, 1),
            )
        else:
            super().__init__(cfg, num_classes)
        self.cam_at = cam_at

    def _grid(self, h):
        b, n, d = h.shape
        side = math.isqrt(n - 1)  # a square input: CLS + side x side patches
        return h[:, 1:].transpose(1, 2).reshape(b, d, side, side)

    def _through_cam(self, h):
        a = self.cam_layer(self._grid(h))
        return a, torch.cat([h[:, :1], a.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, pixels):
        h = self.body.embeddings(self.normalise(pixels))
        layers = list(self.body.layers)
        cam_index = {"stem": 0, "entering_last": len(layers) - 1}.get(self.cam_at)
        a = None
        for i, layer in enumerate(layers):
            if i == cam_index:
                a, h = self._through_cam(h)
            h = layer(h)
        h = self.body.layernorm(h)
        if self.cam_at == "final_mean":
            a, h = self._through_cam(h)
            logits = self.head(h[:, 1:].mean(dim=1))
        else:
            logits = self.head(h[:, 0])
        return backbones.ClassifierOutput(logits=logits, activations=a, features=self._grid(h))


@contextlib.contextmanager
def _patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def probe_backbone(probe: Probe):
    """Train and reload the probe's model under the pipeline's vit_b16 slot."""
    if probe.backbone == "resnet18":
        yield "resnet18"
        return

    def build(cfg, num_classes):
        return ProbeViT(num_classes, conv_stem=probe.backbone == "vit_conv", cam_at=probe.cam_at)

    with _patched(train_module, "build_classifier", build), _patched(load_module, "build_classifier", build):
        yield "vit_b16"


def no_decoy_copy(src: Path, dst: Path, image_size: int, decoy_size: float) -> None:
    """The dataset with the border strip (where the decoy lives) blanked in every split."""
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.name != "images.npy":
            (dst / item.name).symlink_to(item.resolve())
    images = np.load(src / "images.npy")
    w = border_width(image_size, decoy_size)
    blanked = np.zeros_like(images)
    blanked[:, w:-w, w:-w] = images[:, w:-w, w:-w]
    np.save(dst / "images.npy", blanked)


def run_probe(probe: Probe, work: Path, dataset: str, seed: int) -> dict:
    root = work / probe.data
    params_file = scoped_params(root, dict(probe.train), str(len(list(root.glob("params_*")))), probe.variant)
    params = load_params(params_file).for_run(probe.variant, seed)
    paths = run_layout(root, RunKey(dataset, "probes", probe.name.replace(" ", "_").replace("=", ""), seed))
    t0 = time.perf_counter()
    with probe_backbone(probe) as backbone:
        summary = train(params, dataset, backbone, probe.variant, paths)
        model, config = load_exported(paths.model_dir)
    last = summary["history"][-1]
    return {
        "probe": probe.name, **{k: v for k, v in dataclasses.asdict(probe).items() if k != "name"},
        "dataset": dataset, "seed": seed,
        **score_test_split(model, config, data_dir(root, dataset), params, seed, dataset),
        "final_train_pred": round(last["train_pred"], 4),
        "final_train_visual": round(last["train_visual"], 4) if "train_visual" in last else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="object_me")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", help="probe names to run (default: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    synthetic = params.synthetic[args.dataset] if args.dataset in params.synthetic else None
    if synthetic is None:
        raise SystemExit(f"{args.dataset}: the probe blanks the synthetic decoy, so it needs a synthetic dataset")
    probes = [p for p in PROBES if not args.only or p.name in args.only]
    rows = []
    with tempfile.TemporaryDirectory(prefix="megl-vit-probe-") as tmp:
        work = Path(tmp)
        for mode in ("decoy", "no_decoy"):
            (work / mode / "data").mkdir(parents=True)
        (work / "decoy" / "data" / args.dataset).symlink_to(REPO / "data" / args.dataset)
        no_decoy_copy(REPO / "data" / args.dataset, work / "no_decoy" / "data" / args.dataset,
                      params.dataset(args.dataset).image_size, synthetic.decoy_size)
        for probe in probes:
            rows.append(run_probe(probe, work, args.dataset, args.seed))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"runs": rows, "torch_threads": torch.get_num_threads()}
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
